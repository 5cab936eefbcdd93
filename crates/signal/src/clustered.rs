//! A core that is one node of a cluster (PROTOCOL.md §6): what it keeps of
//! the conversation with the store, and how each push is carried out.
//!
//! The node stays the authority for its own connections: it checks a
//! request, fans a room event out to its local members at once, and asks
//! the store only what needs the others (a seat, the other nodes' members,
//! a session it does not hold). Answers that need the store are parked
//! under a [`ReqId`] and finished when the push comes back. A core made by
//! [`SignalCore::new`] has no `Clustered` and never takes these paths: a
//! node alone answers itself, as fast as before.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{Value, json};
use switchboard_signal_proto::{ErrorCode, MediaKind, RequestId};

use crate::cluster::{
    Command, Copy, NodeId, Push, ReqId, RoomEvent as Remote, SeatLimits, SeatOutcome,
    SessionRecord, Text,
};
use crate::cluster_calls::{CallOp, RemoteRings};
use crate::outbox::{Data, Fanout, RoomEvent};
use crate::presence::JoinKind;
use crate::session::{Session, Sid};
use crate::{
    ClassicArgs, ConnId, Event, Face, IceServer, Identity, Output, Refusal, SignalCore, Timer, wire,
};

/// How a clustered core is set up.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id (`cluster.node_id`).
    pub node: NodeId,
    /// `cluster.node_timeout_secs`: heartbeats go every third of it.
    pub node_timeout: Duration,
}

/// Where an answer that waits for the store goes.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// A native request (with its `id`, if it had one).
    Native(Option<RequestId>),
    /// A classic event; `Some(ticket)` when it asked for an ack.
    Classic(Option<u64>),
}

impl Reply {
    fn wants_count(&self) -> bool {
        matches!(self, Reply::Native(Some(_)) | Reply::Classic(Some(_)))
    }
}

#[derive(Debug)]
pub(crate) struct Gather {
    pub(crate) sid: Sid,
    pub(crate) reply: Reply,
    /// A `to` message: 0 recipients is `no_such_peer`.
    pub(crate) to: bool,
    pub(crate) counted: u64,
    pub(crate) waiting: Vec<NodeId>,
    /// The store has answered (`Published`).
    pub(crate) answered: bool,
    /// Socket.IO recipients here whose queue was full.
    pub(crate) refused: u64,
    /// A call's ringing: the key of the call, and who rang how many.
    pub(crate) call: Option<u64>,
    pub(crate) per_node: Vec<(NodeId, u64)>,
}

#[derive(Debug)]
pub(crate) enum Pending {
    Join {
        sid: Sid,
        room: Text,
        meta: Option<Box<RawValue>>,
        reply: Reply,
    },
    Gather(Gather),
    Take {
        conn: ConnId,
        identity: Identity,
        peer: Arc<str>,
        ice: Vec<IceServer>,
    },
    Adopt,
    /// An admin request.
    Admin {
        id: crate::AdminId,
        waiting: crate::admin::Waiting,
    },
}

/// A count the store must confirm, held until the shell has drained the
/// Socket.IO events it counts (it may find a queue full).
#[derive(Debug)]
pub(crate) enum Held {
    /// A local fan-out's count, inside the gather `req`.
    Gather(ReqId),
    /// A report to another node.
    Report {
        to: NodeId,
        req: ReqId,
        sessions: Vec<Copy>,
        classic: u64,
        refused: u64,
    },
}

#[derive(Debug)]
pub(crate) struct Clustered {
    pub(crate) node: NodeId,
    pub(crate) heartbeat: Duration,
    pub(crate) next_req: ReqId,
    /// The store is reachable (the shell says so).
    pub(crate) up: bool,
    /// The store's generation at the last resync.
    pub(crate) generation: Option<u64>,
    /// `backplane_up` was called once: the heartbeat runs.
    pub(crate) started: bool,
    pub(crate) pending: HashMap<ReqId, Pending>,
    /// Connections waiting for a take, and its key.
    pub(crate) taking: HashMap<ConnId, ReqId>,
    /// Local joins waiting for their seat, per room; that room's deliveries
    /// wait with them, so that a peer never gets a room's traffic before
    /// its `joined`.
    pub(crate) joining: HashMap<Text, u32>,
    pub(crate) held_pushes: HashMap<Text, VecDeque<Push>>,
    /// Sessions started while the store was out of reach: they are new to
    /// it when it comes back.
    pub(crate) unregistered: HashSet<Sid>,
    /// Sessions that came here without a connection (adopted from a dead
    /// node, or taken by a resume whose connection closed), with the `seq`
    /// the store had: the node they came from may have served the client
    /// alone (cut off from the store), so frames kept here since are
    /// numbered for now only, until a resume's `last_seq` says how far the
    /// client got (see `SessionRecord::base`).
    pub(crate) bases: HashMap<Sid, u64>,
    /// Classic acknowledgements not sent yet, per session, oldest first:
    /// `(ticket, payload when ready)`.
    pub(crate) classic_slots: HashMap<Sid, VecDeque<(u64, Option<Value>)>>,
    pub(crate) next_ticket: u64,
    pub(crate) held: Option<Held>,
    pub(crate) rings: RemoteRings,
    /// Accepts and declines waiting for the caller's node, by call id and
    /// session.
    pub(crate) ops: HashMap<(Text, Sid), (CallOp, NodeId, Option<RequestId>)>,
    /// This node has a media socket (see `SignalCore::set_media_relay`).
    pub(crate) relay: bool,
    /// SFU rooms with local members whose media is not here: their media
    /// node, or `None` when the room has none (it died, and no member's
    /// node could take it). A room absent here relays its media here.
    pub(crate) media_nodes: HashMap<Text, Option<NodeId>>,
    /// Peers of other nodes whose SFU sessions are here, by `(room, peer)`:
    /// the node that signals for them.
    pub(crate) remote_media: HashMap<(Text, Text), NodeId>,
    /// SFU rooms of the sessions moving here (a take, an adoption), from
    /// the store's `RoomMedia` pushes: installed as SFU rooms.
    pub(crate) moving_sfu: HashSet<Text>,
    /// Where a room's messages that nobody waits for a count of go, by
    /// room (`Push::Route`): they are then forwarded straight to the
    /// members' nodes, no script in Redis. Dropped when the store says the
    /// room's members or their nodes changed, and after [`ROUTE_TTL`].
    pub(crate) routes: HashMap<Text, Route>,
    /// Rooms whose route was asked for and not answered yet.
    pub(crate) routing: HashSet<Text>,
}

/// A route is not used past this age even if the store said nothing:
/// what no push says (a node that came back, a store that restarted) is
/// then stale this long at most. It is asked for again from half that age
/// on, and used until the answer comes, so that a busy room's messages do
/// not go through the store meanwhile.
pub(crate) const ROUTE_TTL: Duration = Duration::from_secs(2);

/// A room's members on other nodes, as the store last said.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) nodes: Vec<(NodeId, Vec<(Text, Text)>)>,
    /// Not used from then on; asked for again from half its age on.
    pub(crate) until: Instant,
}

impl Clustered {
    pub(crate) fn new(cfg: ClusterConfig) -> Self {
        Clustered {
            node: cfg.node,
            heartbeat: (cfg.node_timeout / 3).max(Duration::from_millis(100)),
            next_req: 0,
            up: false,
            started: false,
            generation: None,
            pending: HashMap::new(),
            taking: HashMap::new(),
            joining: HashMap::new(),
            held_pushes: HashMap::new(),
            unregistered: HashSet::new(),
            bases: HashMap::new(),
            classic_slots: HashMap::new(),
            next_ticket: 0,
            held: None,
            rings: RemoteRings::default(),
            ops: HashMap::new(),
            relay: false,
            media_nodes: HashMap::new(),
            remote_media: HashMap::new(),
            moving_sfu: HashSet::new(),
            routes: HashMap::new(),
            routing: HashSet::new(),
        }
    }

    pub(crate) fn req(&mut self) -> ReqId {
        self.next_req += 1;
        self.next_req
    }
}

pub(crate) fn unavailable() -> Refusal {
    Refusal::new(
        ErrorCode::Unavailable,
        "the cluster backplane is unreachable; try again",
    )
}

/// A meta or other JSON text from the backplane, checked before it is
/// written into a frame: the store is not trusted to keep JSON whole.
pub(crate) fn json_text(text: &str) -> Option<Box<RawValue>> {
    RawValue::from_string(text.to_owned()).ok()
}

fn record_of(s: &Session) -> SessionRecord {
    SessionRecord {
        session: s.id.clone(),
        token: s.resume_token.clone(),
        peer: s.peer.clone(),
        user: s.user.clone(),
        face: s.face,
        seq: s.seq,
        frames: s
            .replay
            .after(s.seq.saturating_sub(s.replay.len() as u64), s.seq)
            .map(Iterator::collect)
            .unwrap_or_default(),
        rooms: Vec::new(),
        epoch: s.epoch,
        base: None,
    }
}

impl SignalCore {
    /// This node's id, when the core is one node of a cluster.
    #[must_use]
    pub fn cluster_node(&self) -> Option<&NodeId> {
        self.cluster.as_ref().map(|c| &c.node)
    }

    pub(crate) fn command(&mut self, cmd: Command) {
        self.outbox.backplane(cmd);
    }

    /// Whether the clustered core is cut off from its store.
    pub(crate) fn cluster_down(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| !c.up)
    }

    pub(crate) fn next_req(&mut self) -> ReqId {
        self.cluster.as_mut().map_or(0, |c| c.req())
    }

    pub(crate) fn park(&mut self, req: ReqId, p: Pending) {
        if let Some(c) = &mut self.cluster {
            c.pending.insert(req, p);
        }
    }

    /// A new session: the store learns of it (later, when it is out of
    /// reach).
    pub(crate) fn registered(&mut self, sid: Sid) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        if c.up {
            let rec = record_of(s);
            self.command(Command::Register(rec));
        } else {
            c.unregistered.insert(sid);
        }
    }

    /// `end_session`'s part in a cluster: the store ends its copy, which
    /// takes the seats and tells the other nodes' members `bye`.
    pub(crate) fn cluster_session_ended(&mut self, sid: Sid, id: &Text) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        c.unregistered.remove(&sid);
        c.bases.remove(&sid);
        c.classic_slots.remove(&sid);
        let up = c.up;
        self.rings_party_gone(sid);
        if up {
            self.command(Command::End {
                session: id.clone(),
            });
        }
    }

    // ---- the shell's side ----

    /// The backplane is reachable (at start, and after it was down): the
    /// node tells the store every session it holds, and the store makes
    /// itself agree ([`Push::Resynced`]).
    pub fn backplane_up(&mut self, now: Instant) {
        self.flush_ack();
        let Some(c) = &mut self.cluster else {
            return;
        };
        let first = !c.started;
        c.started = true;
        c.up = true;
        self.outbox.set_persist(true);
        if first {
            let at = now + c.heartbeat;
            self.timers.insert((at, Timer::Heartbeat));
        }
        self.resync();
    }

    /// The backplane is out of reach (Redis down, a partition): what needs
    /// the other nodes is refused with `unavailable` until
    /// [`SignalCore::backplane_up`]; what waits for the store ends now
    /// with what is known.
    pub fn backplane_down(&mut self, now: Instant) {
        self.flush_ack();
        let Some(c) = &mut self.cluster else {
            return;
        };
        if !c.up {
            return;
        }
        c.up = false;
        self.outbox.set_persist(false);
        c.routes.clear();
        c.routing.clear();
        let pending: Vec<(ReqId, Pending)> = c.pending.drain().collect();
        let held: Vec<Push> = c.held_pushes.drain().flat_map(|(_, q)| q).collect();
        c.joining.clear();
        c.taking.clear();
        let mut pending = pending;
        pending.sort_by_key(|(req, _)| *req);
        for (_, p) in pending {
            match p {
                Pending::Join { sid, reply, .. } => self.refuse(sid, &reply, &unavailable()),
                Pending::Gather(g) => {
                    // What the store confirmed counts; a fan-out it never
                    // answered counts nothing: its frames waited for the
                    // store, and may not have reached anyone.
                    let mut g = g;
                    g.waiting.clear();
                    self.finish_gather(now, g);
                }
                Pending::Take { conn, .. } => {
                    self.outbox
                        .close(conn, crate::BACKPLANE_DOWN, "cluster backplane unreachable");
                }
                Pending::Adopt => {}
                Pending::Admin { id, .. } => self.admin_failed(id),
            }
        }
        // Deliveries held for a join that will not come: the local members
        // of those rooms still get them.
        for push in held {
            self.handle_push_now(now, push);
        }
        let ops: Vec<(Sid, Option<RequestId>)> = self
            .cluster
            .as_mut()
            .map(|c| {
                c.ops
                    .drain()
                    .map(|((_, sid), (_, _, r))| (sid, r))
                    .collect()
            })
            .unwrap_or_default();
        for (sid, reply_to) in ops {
            self.send_refusal(sid, &Reply::Native(reply_to), &unavailable());
        }
        self.settle();
    }

    fn resync(&mut self) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let fresh = std::mem::take(&mut c.unregistered);
        let mut sessions = Vec::with_capacity(self.sessions.len());
        for (sid, s) in self.sessions.iter_mut() {
            let mut rec = record_of(s);
            rec.base = c.bases.get(sid).copied();
            // The store takes this base: the next frame sent clears it.
            s.store_base |= rec.base.is_some();
            if !fresh.contains(sid) {
                rec.rooms = s
                    .rooms
                    .iter()
                    .filter_map(|&rid| self.rooms.get(rid).map(|r| Text::from(&*r.name)))
                    .collect();
            }
            sessions.push(rec);
        }
        sessions.sort_by(|a, b| a.session.cmp(&b.session));
        let generation = self.cluster.as_ref().and_then(|c| c.generation);
        self.command(Command::Resync {
            sessions,
            generation,
        });
    }

    /// The store applied (`ok`) or refused the oldest
    /// [`Command::Persist`] or [`Command::Resumed`] not answered yet: frames
    /// waiting for it go out (or, refused, are dropped: their session is
    /// another node's now). Answer every `Persist` and `Resumed`, in order.
    pub fn persisted(&mut self, ok: bool) {
        self.flush_ack();
        if let Some(sid) = self.outbox.persisted(ok) {
            // Taken by another node; its `Taken` push is on the way. Nothing
            // queued for its connection goes out, replays included: the
            // frames are that node's to number.
            self.forget(sid, crate::TAKEN_OVER, "taken over");
        }
        self.outbox.release();
    }

    /// A push from the store.
    pub fn handle_push(&mut self, now: Instant, push: Push) {
        self.flush_ack();
        if self.cluster.is_none() {
            return;
        }
        self.handle_push_now(now, push);
        self.settle();
    }

    fn handle_push_now(&mut self, now: Instant, push: Push) {
        match push {
            Push::JoinAnswer { req, outcome } => self.join_answer(now, req, outcome),
            Push::Published {
                req,
                counted,
                nodes,
            } => self.published(now, req, counted, nodes),
            Push::Route { room, nodes } => self.route_answer(now, room, nodes),
            Push::Rerouted { room } => {
                if let Some(c) = &mut self.cluster {
                    c.routes.remove(&room);
                }
            }
            Push::Deliver {
                from,
                req,
                room,
                event,
                sessions,
            } => {
                if matches!(event, Remote::OtherJoined { .. } | Remote::Bye { .. })
                    && let Some(c) = &mut self.cluster
                {
                    // Its members changed.
                    c.routes.remove(&room);
                }
                let held = self.cluster.as_mut().is_some_and(|c| {
                    if c.joining.contains_key(&room) {
                        c.held_pushes
                            .entry(room.clone())
                            .or_default()
                            .push_back(Push::Deliver {
                                from: from.clone(),
                                req,
                                room: room.clone(),
                                event: event.clone(),
                                sessions: sessions.clone(),
                            });
                        true
                    } else {
                        false
                    }
                });
                if !held {
                    self.deliver_remote(from, req, &room, &event, &sessions);
                }
            }
            Push::Counted { req, from, count } => self.counted(now, req, &from, count),
            Push::Took { req, outcome } => {
                self.took(now, req, outcome);
                self.moved_in();
            }
            Push::Taken { session } => {
                if let Some(&sid) = self.by_session_id.get(&session) {
                    self.forget(sid, crate::TAKEN_OVER, "taken over");
                }
            }
            Push::Adopted { req, sessions } => {
                if let Some(c) = &mut self.cluster {
                    c.pending.remove(&req);
                }
                for rec in sessions {
                    self.adopt_one(now, rec);
                }
                self.moved_in();
            }
            Push::NodeDied { node } => {
                if let Some(c) = &mut self.cluster {
                    c.routes.clear();
                }
                self.node_died(now, &node);
            }
            Push::MediaNode { room, node } => self.media_moved(&room, node),
            Push::RoomMedia { room, node } => self.room_media(room, node),
            Push::Ring {
                from,
                req,
                call,
                user,
                except,
                body,
            } => self.rung_here(now, from, req, call, &user, &except, body),
            Push::Told { from, msg } => self.told(now, from, msg),
            Push::Resynced { lost, generation } => {
                if let Some(c) = &mut self.cluster {
                    c.generation = Some(generation);
                }
                for session in lost {
                    if let Some(&sid) = self.by_session_id.get(&session) {
                        // Adopted or resumed elsewhere while this node was
                        // cut off: the client resumes where it is now.
                        self.forget(sid, 1012, "service restart");
                    }
                }
            }
            Push::Dead => {
                // Commands sent while dead were ignored: nobody answers
                // the admin requests among them.
                self.admin_all_failed();
                self.resync();
            }
            Push::Rooms { req, rooms } => self.admin_rooms(now, req, rooms),
            Push::Room { req, room } => self.admin_room(now, req, room),
            Push::Kicked { req, kicked } => self.admin_kicked(req, kicked),
            Push::Kick { room, sessions } => self.kick_pushed(now, room, sessions),
        }
    }

    // ---- joins ----

    /// Claims a seat for `sid` in `room` (the local checks are done); a
    /// room it makes is a mesh room.
    pub(crate) fn cluster_join(
        &mut self,
        sid: Sid,
        room: &str,
        meta: Option<&RawValue>,
        kind: JoinKind,
        private: Option<[Text; 2]>,
        reply: Reply,
    ) -> Result<(), Refusal> {
        self.cluster_join_kind(sid, room, meta, kind, private, MediaKind::Mesh, reply)
    }

    /// [`SignalCore::cluster_join`] for a room of kind `media` if this
    /// join makes it: the store decides, with its media node.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn cluster_join_kind(
        &mut self,
        sid: Sid,
        room: &str,
        meta: Option<&RawValue>,
        kind: JoinKind,
        private: Option<[Text; 2]>,
        media: MediaKind,
        reply: Reply,
    ) -> Result<(), Refusal> {
        if self.cluster_down() {
            return Err(unavailable());
        }
        let s = self
            .sessions
            .get(&sid)
            .ok_or_else(crate::presence::no_session)?;
        let room: Text = room.into();
        let already = self.cluster.as_ref().is_some_and(|c| {
            c.pending.values().any(
                |p| matches!(p, Pending::Join { sid: x, room: r, .. } if *x == sid && *r == room),
            )
        });
        if already {
            return Err(Refusal::new(
                ErrorCode::AlreadyJoined,
                "you are already joining this room",
            ));
        }
        let limits = if kind == JoinKind::Request {
            SeatLimits {
                max_peers: self.config.max_peers,
                max_listed: self.config.max_room_meta_bytes,
            }
        } else {
            SeatLimits::default()
        };
        let session = s.id.clone();
        let relay = self.cluster.as_ref().is_some_and(|c| c.relay);
        let req = self.next_req();
        self.command(Command::Join {
            req,
            session,
            room: room.clone(),
            meta: meta.map(|m| Text::from(m.get())),
            limits,
            private,
            media,
            relay,
        });
        if let Some(c) = &mut self.cluster {
            *c.joining.entry(room.clone()).or_default() += 1;
        }
        self.park(
            req,
            Pending::Join {
                sid,
                room,
                meta: meta.map(RawValue::to_owned),
                reply,
            },
        );
        Ok(())
    }

    fn join_answer(&mut self, now: Instant, req: ReqId, outcome: SeatOutcome) {
        let Some(Pending::Join {
            sid,
            room,
            meta,
            reply,
        }) = self.cluster.as_mut().and_then(|c| c.pending.remove(&req))
        else {
            return;
        };
        if self.sessions.contains_key(&sid) {
            match outcome {
                SeatOutcome::Seated {
                    peers,
                    media,
                    media_node,
                } => {
                    let media = (media, media_node);
                    self.seated(now, sid, &room, meta, &peers, media, &reply);
                }
                SeatOutcome::Full => {
                    self.counters.rooms_full += 1;
                    let peer = self.sessions.get(&sid).map(|s| s.peer.clone());
                    self.events.push(Event::RoomFull {
                        peer: peer.as_deref().unwrap_or("").to_owned(),
                        room: room.to_string(),
                    });
                    match &reply {
                        Reply::Native(id) => {
                            self.send(sid, wire::room_only("full", &room, id.as_ref()));
                        }
                        Reply::Classic(ticket) => {
                            let id = peer.as_deref().unwrap_or("").to_owned();
                            self.emit_classic(sid, "full", ClassicArgs::strs(&room, &id));
                            self.classic_ready(sid, *ticket, json!({"full": true}));
                        }
                    }
                }
                SeatOutcome::Forbidden => {
                    let e = Refusal::new(ErrorCode::Forbidden, "this is a private call room");
                    self.refuse(sid, &reply, &e);
                }
                SeatOutcome::NoRelay => {
                    let e = Refusal::new(
                        ErrorCode::Unavailable,
                        "this node relays no media (media.listen is off): it cannot start an \
                         SFU room; join through a node that has the SFU",
                    );
                    self.refuse(sid, &reply, &e);
                }
            }
        }
        self.join_settled(now, &room);
    }

    /// The room's pending joins are one fewer; when none is left, its held
    /// deliveries go out in order.
    fn join_settled(&mut self, now: Instant, room: &Text) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let left = c.joining.get_mut(room).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left != Some(0) {
            return;
        }
        c.joining.remove(room);
        let held = c.held_pushes.remove(room).unwrap_or_default();
        for push in held {
            self.handle_push_now(now, push);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn seated(
        &mut self,
        now: Instant,
        sid: Sid,
        room: &Text,
        meta: Option<Box<RawValue>>,
        peers: &[(Text, Option<Text>)],
        (media, media_node): (MediaKind, Option<NodeId>),
        reply: &Reply,
    ) {
        // Local membership only: capacity was the store's to decide.
        let Ok(rid) = self.rooms.join(room, sid, None, 0, 0, media, now) else {
            return;
        };
        if media == MediaKind::Sfu {
            self.media_node_is(room, media_node);
        }
        let media = self.rooms.get(rid).map_or(media, |r| r.media);
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.rooms.push(rid);
        let me = s.peer.clone();
        self.counters.joins += 1;
        self.events.push(Event::Joined {
            peer: me.to_string(),
            room: room.to_string(),
            peers: peers.len() + 1,
        });
        if let Some(r) = self.rooms.get(rid) {
            let mut f = Fanout::new(RoomEvent::OtherJoined {
                room,
                peer: &me,
                meta: meta.as_deref(),
            });
            for m in &r.members {
                if m.sid != sid
                    && let Some(other) = self.sessions.get_mut(&m.sid)
                {
                    self.outbox.deliver(m.sid, other, &mut f);
                }
            }
        }
        match reply {
            Reply::Native(id) => {
                let metas: Vec<Option<Box<RawValue>>> = peers
                    .iter()
                    .map(|(_, m)| m.as_deref().and_then(json_text))
                    .collect();
                let body = wire::Body::new("joined")
                    .str("room", room)
                    .str("peer", &me)
                    .peers(
                        "peers",
                        peers
                            .iter()
                            .zip(&metas)
                            .map(|((p, _), m)| (&**p, m.as_deref())),
                    )
                    .str("media", media.as_str())
                    .reply_to(id.as_ref())
                    .finish();
                self.send(sid, body);
                // After `joined`: the relay may answer at once.
                self.media_joined(rid, sid);
            }
            Reply::Classic(ticket) => {
                self.emit_classic(sid, "joined", ClassicArgs::strs(room, &me));
                self.classic_ready(sid, *ticket, json!({"ok": true}));
            }
        }
    }

    /// A local leave: the store takes the seat and tells the others.
    pub(crate) fn cluster_left(&mut self, sid: Sid, room: &str) {
        if self.cluster.as_ref().is_some_and(|c| c.up)
            && let Some(s) = self.sessions.get(&sid)
        {
            let session = s.id.clone();
            self.command(Command::Leave {
                session,
                room: room.into(),
            });
        }
    }

    // ---- messages ----

    /// A room message in a cluster: local members get it now, the others'
    /// nodes through the store; the ack waits for the store's count.
    pub(crate) fn cluster_message(
        &mut self,
        now: Instant,
        sid: Sid,
        name: &str,
        to: Option<&str>,
        data: Data<'_>,
        reply: Reply,
    ) -> Result<(), Refusal> {
        let s = self
            .sessions
            .get(&sid)
            .ok_or_else(crate::presence::no_session)?;
        let rid = self
            .rooms
            .find(name)
            .filter(|&rid| s.is_in(rid))
            .ok_or_else(crate::presence::not_in_room)?;
        let from = s.peer.clone();
        let up = !self.cluster_down();
        let mut f = Fanout::message(name, &from, data);
        let mut local: Vec<Copy> = Vec::new();
        let mut classic = 0;
        let mut here = false;
        // Recipients with a live connection: what a node cut off from its
        // store counts (one in its grace period may be resuming elsewhere).
        let mut live = 0;
        if let Some(room) = self.rooms.get(rid) {
            for m in &room.members {
                if m.sid == sid {
                    continue;
                }
                let Some(other) = self.sessions.get_mut(&m.sid) else {
                    continue;
                };
                if let Some(to) = to {
                    if &*other.peer != to {
                        continue;
                    }
                    here = true;
                }
                if self.outbox.deliver(m.sid, other, &mut f) {
                    live += u64::from(other.conn.is_some());
                    match other.face {
                        Face::Native => local.push((other.id.clone(), other.epoch)),
                        Face::Classic => classic += 1,
                    }
                }
            }
        }
        let no_such_peer = || Refusal::new(ErrorCode::NoSuchPeer, "no such peer in this room");
        if here && local.is_empty() && classic == 0 {
            // In its grace period with a full replay: gone for the sender.
            return Err(no_such_peer());
        }
        self.counters.messages += 1;
        if !up {
            if to.is_some() && !here {
                return Err(unavailable());
            }
            let count = live;
            self.counters.deliveries += count;
            self.reply_count(now, sid, &reply, count);
            return Ok(());
        }
        let wants = reply.wants_count() || (to.is_some() && !here);
        let handed = local.len() as u64 + classic;
        if !wants && self.forward(now, name, to, &from, data) {
            self.counters.deliveries += handed;
            return Ok(());
        }
        let req = wants.then(|| self.next_req());
        self.command(Command::Publish {
            req,
            room: name.into(),
            to: to.map(Into::into),
            event: Remote::Message {
                from,
                data: data.raw.into(),
            },
            local,
            classic: if wants { classic } else { 0 },
        });
        match req {
            Some(req) => {
                self.park(
                    req,
                    Pending::Gather(Gather {
                        sid,
                        reply,
                        to: to.is_some(),
                        counted: 0,
                        waiting: Vec::new(),
                        answered: false,
                        refused: 0,
                        call: None,
                        per_node: Vec::new(),
                    }),
                );
                if classic > 0
                    && let Some(c) = &mut self.cluster
                {
                    c.held = Some(Held::Gather(req));
                }
            }
            None => self.counters.deliveries += handed,
        }
        Ok(())
    }

    /// Sends a message nobody waits for a count of straight to the other
    /// members' nodes, by the room's route, when this node holds a fresh
    /// one; otherwise asks for it (once) and returns `false`: the message
    /// then goes through the store.
    fn forward(
        &mut self,
        now: Instant,
        room: &str,
        to: Option<&str>,
        from: &Text,
        data: Data<'_>,
    ) -> bool {
        let Some(c) = &mut self.cluster else {
            return false;
        };
        let (fresh, renew) = c.routes.get(room).map_or((false, true), |r| {
            (r.until > now, r.until <= now + ROUTE_TTL / 2)
        });
        if !fresh {
            c.routes.remove(room);
        }
        if renew && c.routing.insert(room.into()) {
            self.command(Command::Route { room: room.into() });
        }
        if !fresh {
            return false;
        }
        let Some(c) = &mut self.cluster else {
            return false;
        };
        let mut sends = Vec::new();
        if let Some(route) = c.routes.get(room) {
            let room: Text = room.into();
            let data: Text = data.raw.into();
            for (node, members) in &route.nodes {
                let sessions: Vec<Text> = members
                    .iter()
                    .filter(|(_, peer)| peer != from && to.is_none_or(|t| &**peer == t))
                    .map(|(session, _)| session.clone())
                    .collect();
                if !sessions.is_empty() {
                    sends.push(Command::Forward {
                        to: node.clone(),
                        room: room.clone(),
                        event: Remote::Message {
                            from: from.clone(),
                            data: data.clone(),
                        },
                        sessions,
                    });
                }
            }
        }
        for cmd in sends {
            self.command(cmd);
        }
        true
    }

    /// The store's answer to a `Route`: kept while this node has members
    /// in the room.
    fn route_answer(&mut self, now: Instant, room: Text, nodes: Vec<(NodeId, Vec<(Text, Text)>)>) {
        let here = self.rooms.find(&room).is_some();
        let Some(c) = &mut self.cluster else {
            return;
        };
        c.routing.remove(&room);
        if here {
            let until = now + ROUTE_TTL;
            c.routes.insert(room, Route { nodes, until });
        }
    }

    /// A room event from another node for this node's members.
    fn deliver_remote(
        &mut self,
        from: NodeId,
        req: Option<ReqId>,
        room: &str,
        event: &Remote,
        recipients: &[Text],
    ) {
        let mut sessions: Vec<Copy> = Vec::new();
        let mut classic = 0;
        if let Some(rid) = self.rooms.find(room) {
            let meta;
            let mut f = match event {
                Remote::OtherJoined { peer, meta: m } => {
                    meta = m.as_deref().and_then(json_text);
                    Fanout::new(RoomEvent::OtherJoined {
                        room,
                        peer,
                        meta: meta.as_deref(),
                    })
                }
                Remote::Bye { peer } => Fanout::new(RoomEvent::Bye { room, peer }),
                Remote::Message { from, data } => {
                    // Checked where it lies: no copy per delivery.
                    if serde_json::from_str::<&RawValue>(data).is_err() {
                        // Not JSON: the backplane is not trusted with it.
                        return;
                    }
                    Fanout::message(room, from, Data { raw: data })
                }
            };
            for id in recipients {
                let Some(&sid) = self.by_session_id.get(id) else {
                    continue;
                };
                let Some(s) = self.sessions.get_mut(&sid) else {
                    continue;
                };
                if !s.is_in(rid) {
                    continue;
                }
                if self.outbox.deliver(sid, s, &mut f) {
                    match s.face {
                        Face::Native => sessions.push((s.id.clone(), s.epoch)),
                        Face::Classic => classic += 1,
                    }
                }
            }
        }
        if let Some(req) = req {
            self.report(from, req, sessions, classic);
        }
    }

    /// Reports a count to `to`; with Socket.IO recipients, after the drain.
    fn report(&mut self, to: NodeId, req: ReqId, sessions: Vec<Copy>, classic: u64) {
        if classic > 0
            && let Some(c) = &mut self.cluster
        {
            c.held = Some(Held::Report {
                to,
                req,
                sessions,
                classic,
                refused: 0,
            });
            return;
        }
        self.command(Command::Report {
            to,
            req,
            sessions,
            classic,
        });
    }

    /// `flush_ack`'s part: a held count goes out now, less what the shell
    /// could not queue.
    pub(crate) fn flush_held(&mut self) {
        let Some(held) = self.cluster.as_mut().and_then(|c| c.held.take()) else {
            return;
        };
        if let Held::Report {
            to,
            req,
            sessions,
            classic,
            refused,
        } = held
        {
            self.command(Command::Report {
                to,
                req,
                sessions,
                classic: classic.saturating_sub(refused),
            });
        }
    }

    /// `classic_refused`'s part: one of the Socket.IO events just polled
    /// did not reach its queue.
    pub(crate) fn held_refused(&mut self) -> bool {
        let Some(c) = &mut self.cluster else {
            return false;
        };
        match &mut c.held {
            Some(Held::Report { refused, .. }) => *refused += 1,
            Some(Held::Gather(req)) => {
                if let Some(Pending::Gather(g)) = c.pending.get_mut(req) {
                    g.refused += 1;
                }
            }
            None => return false,
        }
        true
    }

    fn published(&mut self, now: Instant, req: ReqId, counted: u64, nodes: Vec<NodeId>) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let Some(Pending::Gather(g)) = c.pending.get_mut(&req) else {
            return;
        };
        g.answered = true;
        g.counted += counted;
        // A node that already reported (its count overtook the answer)
        // is not waited for twice.
        for n in nodes {
            if !g.per_node.iter().any(|(x, _)| *x == n) {
                g.waiting.push(n);
            }
        }
        self.gather_maybe_done(now, req);
    }

    fn counted(&mut self, now: Instant, req: ReqId, from: &NodeId, count: u64) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let Some(Pending::Gather(g)) = c.pending.get_mut(&req) else {
            return;
        };
        if g.per_node.iter().any(|(n, _)| n == from) {
            return;
        }
        g.per_node.push((from.clone(), count));
        g.waiting.retain(|n| n != from);
        g.counted += count;
        self.gather_maybe_done(now, req);
    }

    fn gather_maybe_done(&mut self, now: Instant, req: ReqId) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let done = matches!(c.pending.get(&req), Some(Pending::Gather(g)) if g.answered && g.waiting.is_empty());
        if !done {
            return;
        }
        if let Some(Pending::Gather(g)) = c.pending.remove(&req) {
            if matches!(c.held, Some(Held::Gather(r)) if r == req) {
                c.held = None;
            }
            self.finish_gather(now, g);
        }
    }

    fn finish_gather(&mut self, now: Instant, g: Gather) {
        let total = g.counted.saturating_sub(g.refused);
        if let Some(key) = g.call {
            self.ring_gathered(now, key, &g, total);
            return;
        }
        self.counters.deliveries += total;
        if g.to && total == 0 {
            let e = Refusal::new(ErrorCode::NoSuchPeer, "no such peer in this room");
            self.refuse(g.sid, &g.reply, &e);
            return;
        }
        self.reply_count(now, g.sid, &g.reply, total);
    }

    fn reply_count(&mut self, _now: Instant, sid: Sid, reply: &Reply, count: u64) {
        match reply {
            Reply::Native(Some(id)) => self.send(sid, wire::ack(count, id)),
            Reply::Native(None) => {}
            Reply::Classic(ticket) => {
                self.classic_ready(sid, *ticket, json!({ "delivered": count }));
            }
        }
    }

    /// An error for a request that waited: a frame for a native one, an
    /// `error` event (and the ack's payload) for a classic one.
    pub(crate) fn refuse(&mut self, sid: Sid, reply: &Reply, e: &Refusal) {
        self.counters.error(e.code);
        self.send_refusal(sid, reply, e);
    }

    fn send_refusal(&mut self, sid: Sid, reply: &Reply, e: &Refusal) {
        match reply {
            Reply::Native(id) => self.send(sid, wire::error(e.code, &e.message, id.as_ref())),
            Reply::Classic(ticket) => {
                let object = json!({"code": e.code.as_str(), "message": e.message});
                self.emit_classic(
                    sid,
                    "error",
                    ClassicArgs::values(std::slice::from_ref(&object)),
                );
                let mut ack = object;
                if let Some(map) = ack.as_object_mut() {
                    map.insert("delivered".into(), Value::from(0));
                }
                self.classic_ready(sid, *ticket, ack);
            }
        }
    }

    pub(crate) fn emit_classic(&mut self, sid: Sid, event: &'static str, args: ClassicArgs) {
        if let Some(s) = self.sessions.get(&sid) {
            self.outbox.classic(s, crate::ClassicEvent { event, args });
        }
    }

    // ---- classic acknowledgements, in order ----

    /// A slot for a classic ack that will be ready later.
    pub(crate) fn classic_ticket(&mut self, sid: Sid) -> Option<u64> {
        let c = self.cluster.as_mut()?;
        c.next_ticket += 1;
        let t = c.next_ticket;
        c.classic_slots.entry(sid).or_default().push_back((t, None));
        Some(t)
    }

    pub(crate) fn classic_ready(&mut self, sid: Sid, ticket: Option<u64>, payload: Value) {
        let Some(ticket) = ticket else {
            return;
        };
        let Some(c) = &mut self.cluster else {
            return;
        };
        let Some(q) = c.classic_slots.get_mut(&sid) else {
            return;
        };
        if let Some(slot) = q.iter_mut().find(|(t, _)| *t == ticket) {
            slot.1 = Some(payload);
        }
        let conn = self.sessions.get(&sid).and_then(|s| s.conn);
        while let Some((_, Some(_))) = q.front() {
            if let Some((_, Some(payload))) = q.pop_front()
                && let Some(conn) = conn
            {
                self.outbox.push(Output::ClassicReply { conn, payload });
            }
        }
        if q.is_empty() {
            c.classic_slots.remove(&sid);
        }
    }

    fn node_died(&mut self, now: Instant, node: &NodeId) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let mut done = Vec::new();
        for (req, p) in &mut c.pending {
            if let Pending::Gather(g) = p
                && g.waiting.contains(node)
            {
                g.waiting.retain(|n| n != node);
                if g.answered && g.waiting.is_empty() {
                    done.push(*req);
                }
            }
        }
        done.sort_unstable();
        for req in done {
            self.gather_maybe_done(now, req);
        }
        self.calls_node_died(node);
        self.media_node_died(node);
        let req = self.next_req();
        self.command(Command::Adopt {
            req,
            dead: node.clone(),
        });
        self.park(req, Pending::Adopt);
    }

    pub(crate) fn heartbeat(&mut self, now: Instant) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let at = now + c.heartbeat;
        let up = c.up;
        // Rooms this node no longer has members in need no media route.
        let rooms = &self.rooms;
        c.media_nodes.retain(|room, _| rooms.find(room).is_some());
        c.routes.retain(|_, r| r.until > now);
        self.timers.insert((at, Timer::Heartbeat));
        if up {
            self.command(Command::Heartbeat);
        }
    }
}
