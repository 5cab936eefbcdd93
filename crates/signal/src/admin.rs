//! The admin API's part of the core (PROTOCOL.md §8): room views, kick and
//! close-room. Off the message path: nothing here runs per relayed message,
//! and the only state the views read that the core did not keep anyway is
//! an `Instant` per room and per member, written at join.
//!
//! # How the shell calls it
//! Number each admin request ([`AdminId`], any value the shell can match
//! its answer to), call [`SignalCore::admin`], then drain
//! [`SignalCore::poll_output`] (a kick sends frames) and
//! [`SignalCore::poll_admin`] as after any other input. A node alone
//! answers at once: the answer is in `poll_admin` right after the call. A
//! clustered core asks the store and answers when the store's push comes
//! back (after a later [`SignalCore::handle_push`]), or with
//! [`AdminError::Unavailable`] when the backplane is or goes down; so the
//! shell keeps the HTTP request waiting under its `AdminId` (with a timeout
//! of its own) and drains `poll_admin` after every input it hands the core.
//!
//! # Times
//! The core has no wall clock: `created` and `joined` are the `Instant`s of
//! the calls that made them (in a cluster, the store's age of the room or
//! seat, subtracted from the `now` of the push that brought it). The shell
//! reads `Instant::now()` and `SystemTime::now()` together and converts each
//! with [`wall_clock`]; [`RoomSummary::to_json`] and [`RoomDetail::to_json`]
//! take that conversion and write the JSON of §8.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use serde_json::value::RawValue;
use serde_json::{Value, json};
use switchboard_signal_proto::{ErrorCode, MediaKind};

use crate::cluster::{Command, NodeId, ReqId, RoomInfo, RoomMembers, Text};
use crate::clustered::Pending;
use crate::rooms::RoomId;
use crate::session::Sid;
use crate::{ClassicArgs, Face, LeaveReason, SignalCore, wire};

/// The shell's number for one admin request; its answer carries it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdminId(pub u64);

/// What the admin API asks of the core.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminRequest {
    /// `GET /admin/api/rooms`: answered by [`AdminReply::Rooms`].
    Rooms,
    /// `GET /admin/api/rooms/{room}`: answered by [`AdminReply::Room`], or
    /// [`AdminError::NoSuchRoom`] (404).
    Room {
        /// The room's name.
        room: String,
    },
    /// `DELETE /admin/api/rooms/{room}/peers/{peer}`: the peer gets
    /// `{"type":"error","code":"kicked","room":R,..}` and `left` (its
    /// session stays connected), the others `bye`. Answered by
    /// [`AdminReply::Kicked`] with `peers: 1`, or [`AdminError::NoSuchRoom`]
    /// or [`AdminError::NoSuchPeer`] (404).
    Kick {
        /// The room's name.
        room: String,
        /// The peer id.
        peer: String,
    },
    /// `DELETE /admin/api/rooms/{room}`: every peer of the room is kicked.
    /// Answered by [`AdminReply::Kicked`] with how many, or
    /// [`AdminError::NoSuchRoom`] (404).
    CloseRoom {
        /// The room's name.
        room: String,
    },
}

/// How a room carries media (PROTOCOL.md §7): the admin views' name for
/// [`MediaKind`].
pub type Media = MediaKind;

/// One room in the list of `GET /admin/api/rooms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// Its name.
    pub room: String,
    /// Its media mode.
    pub media: Media,
    /// How many peers are in it.
    pub peers: usize,
    /// When its first peer joined (see the module doc for the conversion).
    pub created: Instant,
}

impl RoomSummary {
    /// `{"room","media","peers":N,"created"}`, with `created` written by
    /// `time` (e.g. [`wall_clock`] then RFC 3339 or Unix milliseconds).
    pub fn to_json(&self, time: impl Fn(Instant) -> Value) -> Value {
        json!({
            "room": self.room,
            "media": self.media.as_str(),
            "peers": self.peers,
            "created": time(self.created),
        })
    }
}

/// One room's peers, for `GET /admin/api/rooms/{room}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomDetail {
    /// Its name.
    pub room: String,
    /// Its media mode.
    pub media: Media,
    /// When its first peer joined.
    pub created: Instant,
    /// Its peers, in join order.
    pub peers: Vec<PeerView>,
}

impl RoomDetail {
    /// `{"room","media","created","peers":[{"peer","user","meta","node","joined"}]}`,
    /// with times written by `time`.
    pub fn to_json(&self, time: impl Fn(Instant) -> Value) -> Value {
        let peers: Vec<Value> = self.peers.iter().map(|p| p.to_json(&time)).collect();
        json!({
            "room": self.room,
            "media": self.media.as_str(),
            "created": time(self.created),
            "peers": peers,
        })
    }
}

/// One peer of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// Its peer id.
    pub peer: String,
    /// Its user id (token `sub` or `?user=`), if any.
    pub user: Option<String>,
    /// The `meta` of its join, as JSON text (`{}` when it had none).
    pub meta: String,
    /// The node that holds its session: a clustered core's node id, or
    /// [`LOCAL_NODE`] in a node alone (the shell may write its own name).
    pub node: NodeId,
    /// When it joined.
    pub joined: Instant,
}

impl PeerView {
    /// `{"peer","user","meta","node","joined"}` (`user` is `null` when
    /// unknown), with `joined` written by `time`.
    pub fn to_json(&self, time: impl Fn(Instant) -> Value) -> Value {
        let meta: Value = serde_json::from_str(&self.meta).unwrap_or_else(|_| json!({}));
        json!({
            "peer": self.peer,
            "user": self.user,
            "meta": meta,
            "node": self.node.0.as_ref(),
            "joined": time(self.joined),
        })
    }
}

/// The `node` of every peer in a node alone ([`SignalCore::new`]).
pub const LOCAL_NODE: &str = "local";

/// What an admin request got.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminReply {
    /// Every room, by name (byte order).
    Rooms(Vec<RoomSummary>),
    /// One room.
    Room(RoomDetail),
    /// How many peers were kicked: 1 for a kick, every peer of the room for
    /// a close. In a cluster, those on other nodes leave when their node
    /// hears of it, a moment later.
    Kicked {
        /// How many.
        peers: usize,
    },
}

/// Why an admin request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No room of that name (HTTP 404).
    #[error("no such room")]
    NoSuchRoom,
    /// The room has no peer of that id (HTTP 404).
    #[error("no such peer in this room")]
    NoSuchPeer,
    /// A clustered core cannot reach its store (HTTP 503).
    #[error("the cluster backplane is unreachable")]
    Unavailable,
}

/// The answer to one admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAnswer {
    /// The request's number.
    pub id: AdminId,
    /// What it got.
    pub result: Result<AdminReply, AdminError>,
}

/// The wall-clock time of `at`, given `now` and `wall_now` read together
/// by the shell: `wall_now - (now - at)`.
#[must_use]
pub fn wall_clock(at: Instant, now: Instant, wall_now: SystemTime) -> SystemTime {
    let age = now.saturating_duration_since(at);
    wall_now.checked_sub(age).unwrap_or(wall_now)
}

/// `now` less a store's age in milliseconds: a cluster's times come as
/// ages measured on the store's one clock, so that the nodes' clocks need
/// not agree.
fn since(now: Instant, age_ms: u64) -> Instant {
    now.checked_sub(Duration::from_millis(age_ms))
        .unwrap_or(now)
}

/// What a clustered core's admin request waits for.
#[derive(Debug)]
pub(crate) enum Waiting {
    Rooms,
    Room(Text),
    /// A kick of one peer: the store kicking nobody means no such peer.
    Kick,
    Close,
}

/// Answers waiting for [`SignalCore::poll_admin`].
pub(crate) type AdminQueue = VecDeque<AdminAnswer>;

impl SignalCore {
    /// An admin request (see [`AdminRequest`] for each and [`crate::admin`]
    /// for the flow). Its answer comes out of [`SignalCore::poll_admin`]:
    /// at once on a node alone, after the store's push in a cluster.
    pub fn admin(&mut self, now: Instant, id: AdminId, request: AdminRequest) {
        self.flush_ack();
        if self.cluster.is_some() {
            self.cluster_admin(id, request);
        } else {
            let result = self.admin_here(now, request);
            self.admin_out.push_back(AdminAnswer { id, result });
        }
        self.settle();
    }

    /// The next admin answer; drain until `None` after every input, like
    /// [`SignalCore::poll_output`].
    #[must_use]
    pub fn poll_admin(&mut self) -> Option<AdminAnswer> {
        self.admin_out.pop_front()
    }

    fn admin_here(
        &mut self,
        now: Instant,
        request: AdminRequest,
    ) -> Result<AdminReply, AdminError> {
        match request {
            AdminRequest::Rooms => Ok(AdminReply::Rooms(self.room_summaries())),
            AdminRequest::Room { room } => self.room_detail(&room).map(AdminReply::Room),
            AdminRequest::Kick { room, peer } => {
                let rid = self.rooms.find(&room).ok_or(AdminError::NoSuchRoom)?;
                let sid = self
                    .by_peer
                    .get(peer.as_str())
                    .copied()
                    .filter(|sid| self.sessions.get(sid).is_some_and(|s| s.is_in(rid)))
                    .ok_or(AdminError::NoSuchPeer)?;
                self.kick_here(now, rid, sid);
                Ok(AdminReply::Kicked { peers: 1 })
            }
            AdminRequest::CloseRoom { room } => {
                let rid = self.rooms.find(&room).ok_or(AdminError::NoSuchRoom)?;
                let members: Vec<Sid> = self
                    .rooms
                    .get(rid)
                    .map(|r| r.members.iter().map(|m| m.sid).collect())
                    .unwrap_or_default();
                for &sid in &members {
                    self.kick_here(now, rid, sid);
                }
                Ok(AdminReply::Kicked {
                    peers: members.len(),
                })
            }
        }
    }

    fn room_summaries(&self) -> Vec<RoomSummary> {
        let mut rooms: Vec<RoomSummary> = self
            .rooms
            .iter()
            .map(|r| RoomSummary {
                room: r.name.to_string(),
                media: r.media,
                peers: r.members.len(),
                created: r.created,
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        rooms
    }

    fn room_detail(&self, name: &str) -> Result<RoomDetail, AdminError> {
        let room = self
            .rooms
            .find(name)
            .and_then(|rid| self.rooms.get(rid))
            .ok_or(AdminError::NoSuchRoom)?;
        let node = NodeId::new(LOCAL_NODE);
        let peers = room
            .members
            .iter()
            .zip(&room.joined)
            .filter_map(|(m, &joined)| {
                let s = self.sessions.get(&m.sid)?;
                Some(PeerView {
                    peer: s.peer.to_string(),
                    user: s.user.as_deref().map(str::to_owned),
                    meta: m.meta.as_deref().map_or("{}", RawValue::get).to_owned(),
                    node: node.clone(),
                    joined,
                })
            })
            .collect();
        Ok(RoomDetail {
            room: room.name.to_string(),
            media: room.media,
            created: room.created,
            peers,
        })
    }

    /// Takes `sid` out of the room as an operator asked: `kicked` and then
    /// `left` to it (Socket.IO: an `error` event `{code:"kicked",message,
    /// room}`, then `leaved`(room, id), as for its own `leave`), `bye` to
    /// the others. Its session stays.
    pub(crate) fn kick_here(&mut self, _now: Instant, rid: RoomId, sid: Sid) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if !s.is_in(rid) {
            return;
        }
        s.rooms.retain(|&r| r != rid);
        let (peer, face) = (s.peer.clone(), s.face);
        let name = self.rooms.name(rid).to_owned();
        let message = "an operator removed you from this room";
        self.counters.error(ErrorCode::Kicked);
        match face {
            Face::Native => {
                let error = wire::Body::new("error")
                    .str("code", ErrorCode::Kicked.as_str())
                    .str("message", message)
                    .str("room", &name)
                    .finish();
                self.send(sid, error);
                self.send(sid, wire::room_only("left", &name, None));
            }
            Face::Classic => {
                let error =
                    json!({"code": ErrorCode::Kicked.as_str(), "message": message, "room": name});
                self.emit_classic(sid, "error", ClassicArgs::values(&[error]));
                self.emit_classic(sid, "leaved", ClassicArgs::strs(&name, &peer));
            }
        }
        self.cluster_left(sid, &name);
        self.depart(rid, sid, &peer, LeaveReason::Kicked);
    }
}

/// A clustered core: the store knows every node's rooms, so every view and
/// kick goes through it, whichever node holds the peers.
impl SignalCore {
    fn cluster_admin(&mut self, id: AdminId, request: AdminRequest) {
        if self.cluster_down() {
            self.admin_failed(id);
            return;
        }
        let req = self.next_req();
        let (cmd, waiting) = match request {
            AdminRequest::Rooms => (Command::Rooms { req }, Waiting::Rooms),
            AdminRequest::Room { room } => {
                let room: Text = room.into();
                let cmd = Command::Room {
                    req,
                    room: room.clone(),
                };
                (cmd, Waiting::Room(room))
            }
            AdminRequest::Kick { room, peer } => {
                let cmd = Command::Kick {
                    req,
                    room: room.into(),
                    peer: Some(peer.into()),
                };
                (cmd, Waiting::Kick)
            }
            AdminRequest::CloseRoom { room } => {
                let cmd = Command::Kick {
                    req,
                    room: room.into(),
                    peer: None,
                };
                (cmd, Waiting::Close)
            }
        };
        self.command(cmd);
        self.park(req, Pending::Admin { id, waiting });
    }

    pub(crate) fn admin_failed(&mut self, id: AdminId) {
        self.admin_out.push_back(AdminAnswer {
            id,
            result: Err(AdminError::Unavailable),
        });
    }

    /// Every admin request waiting for the store fails (it ignored them).
    pub(crate) fn admin_all_failed(&mut self) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let mut failed: Vec<(ReqId, AdminId)> = Vec::new();
        c.pending.retain(|&req, p| match p {
            Pending::Admin { id, .. } => {
                failed.push((req, *id));
                false
            }
            _ => true,
        });
        failed.sort_unstable();
        for (_, id) in failed {
            self.admin_failed(id);
        }
    }

    fn admin_waiting(&mut self, req: ReqId) -> Option<(AdminId, Waiting)> {
        let c = self.cluster.as_mut()?;
        match c.pending.remove(&req)? {
            Pending::Admin { id, waiting } => Some((id, waiting)),
            other => {
                // Not an admin request's key: the store's mistake; the
                // request keeps waiting for its own answer.
                c.pending.insert(req, other);
                None
            }
        }
    }

    pub(crate) fn admin_rooms(&mut self, now: Instant, req: ReqId, rooms: Vec<RoomInfo>) {
        let Some((id, Waiting::Rooms)) = self.admin_waiting(req) else {
            return;
        };
        let rooms = rooms
            .into_iter()
            .map(|r| RoomSummary {
                room: r.room.to_string(),
                media: r.media,
                peers: usize::try_from(r.peers).unwrap_or(usize::MAX),
                created: since(now, r.age_ms),
            })
            .collect();
        self.admin_out.push_back(AdminAnswer {
            id,
            result: Ok(AdminReply::Rooms(rooms)),
        });
    }

    pub(crate) fn admin_room(&mut self, now: Instant, req: ReqId, room: Option<RoomMembers>) {
        let Some((id, Waiting::Room(name))) = self.admin_waiting(req) else {
            return;
        };
        let result = match room {
            None => Err(AdminError::NoSuchRoom),
            Some(r) => {
                let peers = r
                    .members
                    .into_iter()
                    .map(|m| PeerView {
                        peer: m.peer.to_string(),
                        user: m.user.map(|u| u.to_string()),
                        // The store is not trusted to keep JSON whole.
                        meta: m
                            .meta
                            .as_deref()
                            .and_then(crate::clustered::json_text)
                            .map_or_else(|| "{}".to_owned(), |m| m.get().to_owned()),
                        node: m.node,
                        joined: since(now, m.age_ms),
                    })
                    .collect();
                Ok(AdminReply::Room(RoomDetail {
                    room: name.to_string(),
                    media: r.media,
                    created: since(now, r.age_ms),
                    peers,
                }))
            }
        };
        self.admin_out.push_back(AdminAnswer { id, result });
    }

    pub(crate) fn admin_kicked(&mut self, req: ReqId, kicked: Option<u64>) {
        let Some((id, waiting)) = self.admin_waiting(req) else {
            return;
        };
        let result = match (kicked, waiting) {
            (None, _) => Err(AdminError::NoSuchRoom),
            (Some(0), Waiting::Kick) => Err(AdminError::NoSuchPeer),
            (Some(n), _) => Ok(AdminReply::Kicked {
                peers: usize::try_from(n).unwrap_or(usize::MAX),
            }),
        };
        self.admin_out.push_back(AdminAnswer { id, result });
    }

    /// A [`crate::cluster::Push::Kick`]: held behind the deliveries held
    /// for a pending join of the room, so that the kicked peer gets what
    /// the room said before the kick.
    pub(crate) fn kick_pushed(&mut self, now: Instant, room: Text, sessions: Vec<Text>) {
        if let Some(c) = &mut self.cluster
            && c.joining.contains_key(&room)
        {
            let held = crate::cluster::Push::Kick {
                room: room.clone(),
                sessions,
            };
            c.held_pushes.entry(room).or_default().push_back(held);
            return;
        }
        self.kicked_here(now, &room, &sessions);
    }

    /// The store says these sessions of this node are kicked out of `room`.
    /// One this node no longer has in the room (it left, or moved) still
    /// gives its seat back, so that the store and the room agree.
    pub(crate) fn kicked_here(&mut self, now: Instant, room: &Text, sessions: &[Text]) {
        let rid = self.rooms.find(room);
        for id in sessions {
            let sid = self.by_session_id.get(id).copied();
            match (sid, rid) {
                (Some(sid), Some(rid)) if self.sessions.get(&sid).is_some_and(|s| s.is_in(rid)) => {
                    self.kick_here(now, rid, sid);
                }
                _ if !self.cluster_down() => self.command(Command::Leave {
                    session: id.clone(),
                    room: room.clone(),
                }),
                _ => {}
            }
        }
    }
}
