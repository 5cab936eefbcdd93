//! The store in memory: the serial authority behind the backplane. The
//! simulated cluster of the tests runs it behind a bus with delays and
//! partitions; the Redis backplane implements the same commands as Lua
//! scripts, checked against this one.
//!
//! Sans-IO like the cores: [`Store::handle`] takes a command with the node
//! it came from and the time, [`Store::poll`] gives the pushes in order,
//! [`Store::handle_timeout`] declares nodes dead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_signal_proto::MediaKind;

use super::{
    Command, Copy, NodeId, Push, ReqId, RoomEvent, SeatLimits, SeatOutcome, SessionRecord,
    TakeOutcome, Text,
};
use crate::Face;

mod admin;

/// Bounds of the store, the same as the nodes' (one config for the fleet).
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// `session.replay_frames`.
    pub replay_frames: usize,
    /// `session.replay_bytes`.
    pub replay_bytes: usize,
    /// `cluster.node_timeout_secs`.
    pub node_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            replay_frames: 1024,
            replay_bytes: 1 << 20,
            node_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct NodeState {
    last_seen: Instant,
    dead: bool,
    /// Told [`Push::Dead`] since it died: once is enough.
    told_dead: bool,
}

#[derive(Debug)]
struct Stored {
    token: Text,
    peer: Text,
    user: Option<Text>,
    face: Face,
    owner: NodeId,
    seq: u64,
    frames: VecDeque<(u64, Bytes)>,
    bytes: usize,
    rooms: Vec<Text>,
    /// Bumped by every take and adoption (see `SessionRecord::epoch`).
    epoch: u32,
    /// Set when the session moved (a take, an adoption) until a frame
    /// reaches a live connection of it: its `seq` then. The node it moved
    /// from may have served the client alone, cut off from the store; the
    /// client's `last_seq` says how far, and the frames kept since (never
    /// sent: no connection had them) are numbered after it.
    base: Option<u64>,
}

impl Stored {
    fn record(&self, session: &Text, after: u64) -> SessionRecord {
        SessionRecord {
            session: session.clone(),
            token: self.token.clone(),
            peer: self.peer.clone(),
            user: self.user.clone(),
            face: self.face,
            seq: self.seq,
            frames: self
                .frames
                .iter()
                .filter(|(s, _)| *s > after)
                .cloned()
                .collect(),
            rooms: self.rooms.clone(),
            epoch: self.epoch,
            base: self.base,
        }
    }

    fn keep(&mut self, seq: u64, body: Bytes, cfg: &StoreConfig) {
        if seq <= self.seq || cfg.replay_frames == 0 {
            self.seq = self.seq.max(seq);
            return;
        }
        self.seq = seq;
        while !self.frames.is_empty()
            && (self.frames.len() >= cfg.replay_frames
                || self.bytes + body.len() > cfg.replay_bytes)
        {
            if let Some((_, old)) = self.frames.pop_front() {
                self.bytes -= old.len();
            }
        }
        self.bytes += body.len();
        self.frames.push_back((seq, body));
    }

    /// [`Command::Append`]: the frame goes in unchecked, the node's count
    /// bounds the kept frames.
    fn append(&mut self, seq: u64, body: Bytes, keep: Option<u32>) {
        self.seq = self.seq.max(seq);
        self.bytes += body.len();
        self.frames.push_back((seq, body));
        if let Some(keep) = keep {
            while self.frames.len() > keep as usize {
                if let Some((_, old)) = self.frames.pop_front() {
                    self.bytes -= old.len();
                }
            }
        }
    }

    /// A client resumes from `last_seq`: beyond `base`, the node the
    /// session moved from had sent it frames it never wrote, and what was
    /// kept since follows them.
    fn renumber(&mut self, last_seq: u64) {
        let Some(base) = self.base.take() else {
            return;
        };
        if last_seq <= base {
            return;
        }
        let shift = last_seq - base;
        for (seq, _) in self.frames.iter_mut().filter(|(seq, _)| *seq > base) {
            *seq += shift;
        }
        self.seq += shift;
    }

    fn trim(&mut self, last_seq: u64) {
        while self.frames.front().is_some_and(|(s, _)| *s <= last_seq) {
            if let Some((_, old)) = self.frames.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// Whether every frame after `last_seq` is kept (or the client is
    /// ahead of what was written: the old node sent frames it had not
    /// written yet, and the client has them).
    fn covers(&self, last_seq: u64) -> bool {
        if last_seq >= self.seq {
            return true;
        }
        let first = self.frames.front().map_or(self.seq + 1, |(s, _)| *s);
        last_seq + 1 >= first
    }
}

#[derive(Debug)]
struct Member {
    session: Text,
    peer: Text,
    meta: Option<Text>,
    /// When it was seated, for the admin API.
    joined: Instant,
}

#[derive(Debug)]
struct Room {
    members: Vec<Member>,
    listed: usize,
    private: Option<[Text; 2]>,
    /// When its first member was seated, for the admin API.
    created: Instant,
    /// Its kind, set by the join that made it.
    media: MediaKind,
    /// An SFU room's media node (see `SeatOutcome::Seated`).
    media_node: Option<NodeId>,
}

impl Room {
    fn new(now: Instant) -> Self {
        Room {
            members: Vec::new(),
            listed: 0,
            private: None,
            created: now,
            media: MediaKind::Mesh,
            media_node: None,
        }
    }
}

fn listed_cost(meta: Option<&Text>) -> usize {
    meta.map_or(2, |m| m.len()) + crate::MEMBER_ENTRY_BYTES
}

/// The cluster's shared state and its rules.
#[derive(Debug)]
pub struct Store {
    cfg: StoreConfig,
    generation: u64,
    nodes: HashMap<NodeId, NodeState>,
    sessions: HashMap<Text, Stored>,
    rooms: HashMap<Text, Room>,
    /// Native sessions per user id.
    users: HashMap<Text, Vec<Text>>,
    /// Nodes that said they have a media socket (a join with `relay`).
    relays: HashSet<NodeId>,
    out: VecDeque<(NodeId, Push)>,
}

impl Store {
    /// An empty store.
    #[must_use]
    pub fn new(cfg: StoreConfig) -> Self {
        Store::with_generation(cfg, 1)
    }

    /// An empty store that says it is `generation` (a store restarted empty
    /// must not say the same as before; Redis keeps a random one).
    #[must_use]
    pub fn with_generation(cfg: StoreConfig, generation: u64) -> Self {
        Store {
            cfg,
            generation,
            nodes: HashMap::new(),
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            users: HashMap::new(),
            relays: HashSet::new(),
            out: VecDeque::new(),
        }
    }

    /// The next push and the node it is for.
    pub fn poll(&mut self) -> Option<(NodeId, Push)> {
        self.out.pop_front()
    }

    /// Sessions, for tests: how many the store keeps.
    #[must_use]
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// A session's owner, epoch and `seq`, for tests.
    #[must_use]
    pub fn session_of(&self, session: &str) -> Option<(NodeId, u32, u64)> {
        self.sessions
            .get(session)
            .map(|s| (s.owner.clone(), s.epoch, s.seq))
    }

    /// The kind and media node of `room`, for tests.
    #[must_use]
    pub fn media_of(&self, room: &str) -> Option<(MediaKind, Option<NodeId>)> {
        self.rooms
            .get(room)
            .map(|r| (r.media, r.media_node.clone()))
    }

    /// Members of `room` as `(peer, owner node)`, for tests.
    #[must_use]
    pub fn members(&self, room: &str) -> Vec<(Text, NodeId)> {
        self.rooms.get(room).map_or_else(Vec::new, |r| {
            r.members
                .iter()
                .filter_map(|m| {
                    let owner = self.sessions.get(&m.session)?.owner.clone();
                    Some((m.peer.clone(), owner))
                })
                .collect()
        })
    }

    /// When [`Store::handle_timeout`] must next run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.nodes
            .values()
            .filter(|n| !n.dead)
            .map(|n| n.last_seen + self.cfg.node_timeout)
            .min()
    }

    /// Declares dead every node silent for `node_timeout`: the others hear
    /// [`Push::NodeDied`], and its sessions wait for an adopter.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.cfg.node_timeout;
        let mut died: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.dead && n.last_seen + timeout <= now)
            .map(|(id, _)| id.clone())
            .collect();
        died.sort();
        for node in died {
            if let Some(n) = self.nodes.get_mut(&node) {
                n.dead = true;
                n.told_dead = false;
            }
            for other in self.alive() {
                self.out
                    .push_back((other, Push::NodeDied { node: node.clone() }));
            }
            self.move_media(&node);
        }
    }

    /// The SFU rooms whose media node was `dead` (or is going away) get
    /// another: the node of the first member (join order) on a live node
    /// with a media socket, else none. Every live node with members hears
    /// of it.
    fn move_media(&mut self, dead: &NodeId) {
        let mut names: Vec<Text> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.media_node.as_ref() == Some(dead))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        for name in names {
            let mut nodes: Vec<NodeId> = Vec::new();
            for m in self.rooms.get(&name).map_or(&[][..], |r| &r.members[..]) {
                if let Some(s) = self.sessions.get(&m.session)
                    && self.is_alive(&s.owner)
                    && !nodes.contains(&s.owner)
                {
                    nodes.push(s.owner.clone());
                }
            }
            let node = nodes.iter().find(|n| self.relays.contains(*n)).cloned();
            if let Some(r) = self.rooms.get_mut(&name) {
                r.media_node.clone_from(&node);
            }
            for n in nodes {
                self.out.push_back((
                    n,
                    Push::MediaNode {
                        room: name.clone(),
                        node: node.clone(),
                    },
                ));
            }
        }
    }

    fn alive(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.dead)
            .map(|(id, _)| id.clone())
            .collect();
        v.sort();
        v
    }

    fn is_alive(&self, node: &NodeId) -> bool {
        self.nodes.get(node).is_some_and(|n| !n.dead)
    }

    fn push(&mut self, to: &NodeId, push: Push) {
        if self.is_alive(to) {
            self.out.push_back((to.clone(), push));
        }
    }

    /// Whether `session` is `node`'s.
    /// Whether `copy` is `node`'s copy of the session's current move.
    fn holds(&self, node: &NodeId, copy: &Copy) -> bool {
        self.sessions
            .get(&copy.0)
            .is_some_and(|s| &s.owner == node && s.epoch == copy.1)
    }

    fn owns(&self, node: &NodeId, session: &str) -> bool {
        self.sessions.get(session).is_some_and(|s| &s.owner == node)
    }

    /// Applies one command of `from`, atomically. Returns whether it was
    /// applied: `false` for a `Persist` or `Resumed` of a session that is
    /// not `from`'s
    /// (the node answers [`SignalCore::persisted`](crate::SignalCore::persisted)
    /// with it) and for anything from a node declared dead, but an
    /// `Append`, which is never refused.
    pub fn handle(&mut self, now: Instant, from: &NodeId, cmd: Command) -> bool {
        if let Command::Forward {
            to,
            room,
            event,
            sessions,
        } = cmd
        {
            // Redis: a plain PUBLISH on `to`'s channel, whoever listens.
            self.out.push_back((
                to,
                Push::Deliver {
                    from: from.clone(),
                    req: None,
                    room,
                    event,
                    sessions,
                },
            ));
            return true;
        }
        if let Command::Append {
            session,
            epoch,
            seq,
            body,
            keep,
        } = cmd
        {
            // Redis runs it as a plain RPUSH (and LTRIM) to the epoch's
            // list, no script: no liveness, no check but the epoch in the
            // key. A copy that is not the current one writes a list nobody
            // reads.
            if let Some(s) = self.sessions.get_mut(&session)
                && s.epoch == epoch
            {
                s.append(seq, body, keep);
            }
            return true;
        }
        let node = self.nodes.entry(from.clone()).or_insert(NodeState {
            last_seen: now,
            dead: false,
            told_dead: false,
        });
        if node.dead {
            if let Command::Resync {
                sessions,
                generation,
            } = cmd
            {
                node.dead = false;
                node.last_seen = now;
                self.resync(now, from, sessions, generation);
                return true;
            } else if !node.told_dead {
                node.told_dead = true;
                self.out.push_back((from.clone(), Push::Dead));
            }
            return false;
        }
        node.last_seen = now;
        match cmd {
            Command::Heartbeat => {}
            Command::Register(rec) => self.register(from, rec),
            Command::Join {
                req,
                session,
                room,
                meta,
                limits,
                private,
                media,
                relay,
            } => {
                if relay {
                    self.relays.insert(from.clone());
                }
                let ask = (media, relay);
                let outcome = self.join(now, from, &session, &room, meta, limits, private, ask);
                self.push(from, Push::JoinAnswer { req, outcome });
            }
            Command::Leave { session, room } => {
                if self.owns(from, &session) {
                    self.unseat(from, &session, &room);
                }
            }
            Command::Publish {
                req,
                room,
                to,
                event,
                local,
                classic,
            } => self.publish(from, req, room, to, event, &local, classic),
            Command::Persist {
                session,
                epoch,
                seq,
                body,
                sent,
            } => {
                let cfg = self.cfg;
                match self.sessions.get_mut(&session) {
                    // A copy of this move that skipped a `seq` lost one the
                    // store refused: it has forked, and keeps nothing more.
                    Some(s) if &s.owner == from && s.epoch == epoch && seq == s.seq + 1 => {
                        s.keep(seq, body, &cfg);
                        if sent {
                            s.base = None;
                        }
                    }
                    _ => return false,
                }
            }
            // Taken first, above.
            Command::Append { .. } | Command::Forward { .. } => {}
            Command::Route { room } => {
                let nodes = self.route_of(from, &room);
                self.push(from, Push::Route { room, nodes });
            }
            Command::Drop { .. } => {
                // Only an old epoch's list goes, which this store never had.
            }
            Command::Trim { session, last_seq } => {
                if let Some(s) = self.sessions.get_mut(&session)
                    && &s.owner == from
                {
                    s.trim(last_seq);
                }
            }
            Command::Report {
                to,
                req,
                sessions,
                classic,
            } => {
                let count = self.count_owned(from, &sessions) + classic;
                self.push(
                    &to,
                    Push::Counted {
                        req,
                        from: from.clone(),
                        count,
                    },
                );
            }
            Command::End { session } => {
                if self.owns(from, &session) {
                    self.end(from, &session);
                }
            }
            Command::Take {
                req,
                session,
                token,
                last_seq,
            } => {
                let outcome = self.take(from, &session, &token, last_seq);
                self.push(from, Push::Took { req, outcome });
            }
            Command::Resumed {
                session,
                epoch,
                last_seq,
                seq,
            } => match self.sessions.get_mut(&session) {
                Some(s) if &s.owner == from && s.epoch == epoch => {
                    s.renumber(last_seq);
                    s.seq = s.seq.max(seq);
                    s.base = None;
                }
                _ => return false,
            },
            Command::Adopt { req, dead } => {
                let sessions = self.adopt(from, &dead);
                self.push(from, Push::Adopted { req, sessions });
            }
            Command::Ring {
                req,
                call,
                user,
                except,
                body,
            } => self.ring(from, req, call, user, except, body),
            Command::Tell { to, msg } => self.push(
                &to,
                Push::Told {
                    from: from.clone(),
                    msg,
                },
            ),
            Command::Resync {
                sessions,
                generation,
            } => self.resync(now, from, sessions, generation),
            Command::Rooms { req } => {
                let rooms = self.room_list(now);
                self.push(from, Push::Rooms { req, rooms });
            }
            Command::Room { req, room } => {
                let room = self.room_members(now, &room);
                self.push(from, Push::Room { req, room });
            }
            Command::Kick { req, room, peer } => self.kick(from, req, &room, peer.as_ref()),
            Command::MediaAway => {
                self.relays.remove(from);
                self.move_media(from);
            }
        }
        true
    }

    fn count_owned(&self, node: &NodeId, sessions: &[Copy]) -> u64 {
        sessions.iter().filter(|c| self.holds(node, c)).count() as u64
    }

    fn register(&mut self, from: &NodeId, rec: SessionRecord) {
        if self.sessions.contains_key(&rec.session) {
            return;
        }
        if rec.face == Face::Native
            && let Some(u) = &rec.user
        {
            self.users
                .entry(u.clone())
                .or_default()
                .push(rec.session.clone());
        }
        let mut stored = Stored {
            token: rec.token,
            peer: rec.peer,
            user: rec.user,
            face: rec.face,
            owner: from.clone(),
            seq: 0,
            frames: VecDeque::new(),
            bytes: 0,
            rooms: Vec::new(),
            epoch: rec.epoch,
            base: None,
        };
        for (seq, body) in rec.frames {
            stored.keep(seq, body, &self.cfg);
        }
        stored.seq = stored.seq.max(rec.seq);
        self.sessions.insert(rec.session, stored);
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        now: Instant,
        from: &NodeId,
        session: &Text,
        name: &Text,
        meta: Option<Text>,
        limits: SeatLimits,
        private: Option<[Text; 2]>,
        (media, relay): (MediaKind, bool),
    ) -> SeatOutcome {
        let Some(s) = self.sessions.get(session) else {
            return SeatOutcome::Forbidden;
        };
        if &s.owner != from {
            return SeatOutcome::Forbidden;
        }
        let peer = s.peer.clone();
        let making = self.rooms.get(name).is_none_or(|r| r.members.is_empty());
        // A call's room is a mesh room, whatever the node's default.
        let media = if private.is_some() {
            MediaKind::Mesh
        } else {
            media
        };
        if making && media == MediaKind::Sfu && !relay {
            return SeatOutcome::NoRelay;
        }
        let room = self
            .rooms
            .entry(name.clone())
            .or_insert_with(|| Room::new(now));
        if room.members.is_empty() && room.private.is_none() {
            room.private.clone_from(&private);
        }
        let allowed = match (&room.private, &private) {
            (None, None) => true,
            (Some(p), Some(_)) => p.contains(&peer),
            _ => false,
        };
        let cost = listed_cost(meta.as_ref());
        let outcome = if !allowed {
            SeatOutcome::Forbidden
        } else if room.members.iter().any(|m| &m.session == session) {
            // Already seated (a repeated command): the same answer again.
            SeatOutcome::Seated {
                peers: room
                    .members
                    .iter()
                    .filter(|m| &m.session != session)
                    .map(|m| (m.peer.clone(), m.meta.clone()))
                    .collect(),
                media: room.media,
                media_node: room.media_node.clone(),
            }
        } else if (limits.max_peers != 0 && room.members.len() >= limits.max_peers)
            || (limits.max_listed != 0 && room.listed + cost > limits.max_listed)
        {
            SeatOutcome::Full
        } else {
            let peers = room
                .members
                .iter()
                .map(|m| (m.peer.clone(), m.meta.clone()))
                .collect();
            if room.members.is_empty() {
                // The join that makes the room decides its kind, and the
                // media node of an SFU room is its node.
                room.media = media;
                room.media_node = (media == MediaKind::Sfu).then(|| from.clone());
            }
            let (media, media_node) = (room.media, room.media_node.clone());
            room.members.push(Member {
                session: session.clone(),
                peer: peer.clone(),
                meta: meta.clone(),
                joined: now,
            });
            room.listed += cost;
            if let Some(s) = self.sessions.get_mut(session) {
                s.rooms.push(name.clone());
            }
            let event = RoomEvent::OtherJoined { peer, meta };
            self.route(from, name, None, None, event, &[]);
            return SeatOutcome::Seated {
                peers,
                media,
                media_node,
            };
        };
        if self.rooms.get(name).is_some_and(|r| r.members.is_empty()) {
            self.rooms.remove(name);
        }
        outcome
    }

    /// Sends `event` to the nodes (but `from`) with members in `room`;
    /// returns them.
    fn route(
        &mut self,
        from: &NodeId,
        room: &Text,
        req: Option<ReqId>,
        to: Option<&Text>,
        event: RoomEvent,
        skip: &[Copy],
    ) -> Vec<NodeId> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        let subject = match &event {
            RoomEvent::OtherJoined { peer, .. } | RoomEvent::Bye { peer } => peer,
            RoomEvent::Message { from, .. } => from,
        };
        // Each node gets the very sessions that are its members now: one
        // that moves in later (a resume, an adoption) must not get what was
        // routed to another node for it.
        let mut by_node: Vec<(NodeId, Vec<Text>)> = Vec::new();
        for m in &r.members {
            if &m.peer == subject
                || skip.iter().any(|c| c.0 == m.session)
                || to.is_some_and(|t| t != &m.peer)
            {
                continue;
            }
            let Some(s) = self.sessions.get(&m.session) else {
                continue;
            };
            if &s.owner == from || !self.is_alive(&s.owner) {
                continue;
            }
            match by_node.iter_mut().find(|(n, _)| n == &s.owner) {
                Some((_, list)) => list.push(m.session.clone()),
                None => by_node.push((s.owner.clone(), vec![m.session.clone()])),
            }
        }
        let nodes: Vec<NodeId> = by_node.iter().map(|(n, _)| n.clone()).collect();
        for (n, sessions) in by_node {
            self.out.push_back((
                n,
                Push::Deliver {
                    from: from.clone(),
                    req,
                    room: room.clone(),
                    event: event.clone(),
                    sessions,
                },
            ));
        }
        nodes
    }

    /// The members of `room` owned by live nodes other than `from`, by
    /// node, in member order.
    fn route_of(&self, from: &NodeId, room: &Text) -> Vec<(NodeId, Vec<(Text, Text)>)> {
        let mut by_node: Vec<(NodeId, Vec<(Text, Text)>)> = Vec::new();
        let Some(r) = self.rooms.get(room) else {
            return by_node;
        };
        for m in &r.members {
            let Some(s) = self.sessions.get(&m.session) else {
                continue;
            };
            if &s.owner == from || !self.is_alive(&s.owner) {
                continue;
            }
            let member = (m.session.clone(), m.peer.clone());
            match by_node.iter_mut().find(|(n, _)| n == &s.owner) {
                Some((_, list)) => list.push(member),
                None => by_node.push((s.owner.clone(), vec![member])),
            }
        }
        by_node
    }

    /// A member of each of `rooms` moved: the nodes of their members (live,
    /// in member order, once each) drop the route they hold.
    fn reroute(&mut self, rooms: &[Text]) {
        let mut done: Vec<&Text> = Vec::new();
        let mut pushes = Vec::new();
        for name in rooms {
            if done.contains(&name) {
                continue;
            }
            done.push(name);
            let Some(r) = self.rooms.get(name) else {
                continue;
            };
            let mut nodes: Vec<&NodeId> = Vec::new();
            for m in &r.members {
                if let Some(s) = self.sessions.get(&m.session)
                    && self.is_alive(&s.owner)
                    && !nodes.contains(&&s.owner)
                {
                    nodes.push(&s.owner);
                }
            }
            for n in nodes {
                pushes.push((n.clone(), name.clone()));
            }
        }
        for (n, room) in pushes {
            self.push(&n, Push::Rerouted { room });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
        &mut self,
        from: &NodeId,
        req: Option<ReqId>,
        room: Text,
        to: Option<Text>,
        event: RoomEvent,
        local: &[Copy],
        classic: u64,
    ) {
        let counted = self.count_owned(from, local) + classic;
        let nodes = self.route(from, &room, req, to.as_ref(), event, local);
        if let Some(req) = req {
            self.push(
                from,
                Push::Published {
                    req,
                    counted,
                    nodes,
                },
            );
        }
    }

    fn unseat(&mut self, from: &NodeId, session: &Text, name: &Text) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let Some(pos) = room.members.iter().position(|m| &m.session == session) else {
            return;
        };
        let gone = room.members.remove(pos);
        room.listed = room.listed.saturating_sub(listed_cost(gone.meta.as_ref()));
        if room.members.is_empty() {
            self.rooms.remove(name);
        } else {
            self.route(
                from,
                name,
                None,
                None,
                RoomEvent::Bye { peer: gone.peer },
                &[],
            );
        }
        if let Some(s) = self.sessions.get_mut(session) {
            s.rooms.retain(|r| r != name);
        }
    }

    fn end(&mut self, from: &NodeId, session: &Text) {
        let rooms = self
            .sessions
            .get(session)
            .map(|s| s.rooms.clone())
            .unwrap_or_default();
        for room in &rooms {
            self.unseat(from, session, room);
        }
        if let Some(s) = self.sessions.remove(session)
            && let Some(u) = &s.user
            && let Some(list) = self.users.get_mut(u)
        {
            list.retain(|x| x != session);
            if list.is_empty() {
                self.users.remove(u);
            }
        }
    }

    fn take(&mut self, from: &NodeId, session: &Text, token: &str, last_seq: u64) -> TakeOutcome {
        let Some(s) = self.sessions.get_mut(session) else {
            return TakeOutcome::Unknown;
        };
        if s.face != Face::Native || !token_eq(&s.token, token) {
            return TakeOutcome::Unknown;
        }
        let old = std::mem::replace(&mut s.owner, from.clone());
        s.epoch = s.epoch.wrapping_add(1);
        s.renumber(last_seq);
        let covered = s.covers(last_seq);
        if covered {
            s.seq = s.seq.max(last_seq);
            // Until the taker sends it a frame, its connection may be gone.
            s.base = Some(s.seq);
        }
        let record = s.record(session, last_seq);
        if &old != from {
            self.push(
                &old,
                Push::Taken {
                    session: session.clone(),
                },
            );
        }
        self.room_media_to(from, &record.rooms);
        self.reroute(&record.rooms);
        if covered {
            TakeOutcome::Taken(record)
        } else {
            TakeOutcome::Gap(record)
        }
    }

    fn adopt(&mut self, from: &NodeId, dead: &NodeId) -> Vec<SessionRecord> {
        if self.is_alive(dead) || !self.nodes.contains_key(dead) {
            return Vec::new();
        }
        let mut ids: Vec<Text> = self
            .sessions
            .iter()
            .filter(|(_, s)| &s.owner == dead)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.owner = from.clone();
                s.epoch = s.epoch.wrapping_add(1);
                // Adopted twice before a resume: the first base holds.
                s.base = Some(s.base.map_or(s.seq, |b| b.min(s.seq)));
                out.push(s.record(&id, 0));
            }
        }
        for rec in &out {
            self.room_media_to(from, &rec.rooms);
        }
        let rooms: Vec<Text> = out.iter().flat_map(|r| r.rooms.iter().cloned()).collect();
        self.reroute(&rooms);
        out
    }

    /// Tells `to`, which a session in `rooms` moves to, the media node of
    /// each of them that is an SFU room.
    fn room_media_to(&mut self, to: &NodeId, rooms: &[Text]) {
        for name in rooms {
            if let Some(r) = self.rooms.get(name)
                && r.media == MediaKind::Sfu
            {
                let push = Push::RoomMedia {
                    room: name.clone(),
                    node: r.media_node.clone(),
                };
                self.push(to, push);
            }
        }
    }

    fn ring(
        &mut self,
        from: &NodeId,
        req: ReqId,
        call: Text,
        user: Text,
        except: Text,
        body: Bytes,
    ) {
        let mut nodes: Vec<NodeId> = Vec::new();
        for sid in self.users.get(&user).into_iter().flatten() {
            if *sid == except {
                continue;
            }
            if let Some(s) = self.sessions.get(sid)
                && self.is_alive(&s.owner)
                && !nodes.contains(&s.owner)
            {
                nodes.push(s.owner.clone());
            }
        }
        for n in &nodes {
            self.out.push_back((
                n.clone(),
                Push::Ring {
                    from: from.clone(),
                    req,
                    call: call.clone(),
                    user: user.clone(),
                    except: except.clone(),
                    body: body.clone(),
                },
            ));
        }
        self.push(
            from,
            Push::Published {
                req,
                counted: 0,
                nodes,
            },
        );
    }

    fn resync(
        &mut self,
        now: Instant,
        from: &NodeId,
        sessions: Vec<SessionRecord>,
        generation: Option<u64>,
    ) {
        if generation.is_some_and(|g| g != self.generation) {
            self.restore(now, from, sessions);
            return;
        }
        let mut lost = Vec::new();
        let mut held: Vec<Text> = Vec::with_capacity(sessions.len());
        for rec in sessions {
            match self.sessions.get(&rec.session) {
                Some(s) if &s.owner == from && s.epoch == rec.epoch => {
                    held.push(rec.session.clone());
                    let stale: Vec<Text> = s
                        .rooms
                        .iter()
                        .filter(|r| !rec.rooms.contains(r))
                        .cloned()
                        .collect();
                    for room in stale {
                        self.unseat(from, &rec.session, &room);
                    }
                    let cfg = self.cfg;
                    if let Some(s) = self.sessions.get_mut(&rec.session) {
                        s.frames.clear();
                        s.bytes = 0;
                        s.seq = 0;
                        for (seq, body) in rec.frames {
                            s.keep(seq, body, &cfg);
                        }
                        s.seq = s.seq.max(rec.seq);
                        // The node's frames replace the store's, numbering
                        // and all.
                        s.base = rec.base;
                    }
                }
                // Started while the node could not reach the store (it
                // joined nothing then): new here.
                None if rec.rooms.is_empty() => {
                    held.push(rec.session.clone());
                    self.register(from, rec);
                }
                _ => lost.push(rec.session),
            }
        }
        // What the store still gives this node but the node no longer has
        // ended while the two could not talk.
        let mut gone: Vec<Text> = self
            .sessions
            .iter()
            .filter(|(id, s)| &s.owner == from && !held.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        gone.sort();
        for id in gone {
            self.end(from, &id);
        }
        self.push(
            from,
            Push::Resynced {
                lost,
                generation: self.generation,
            },
        );
    }

    /// The store started empty (Redis restarted): the node's sessions come
    /// back as they were, seats and all. Nobody is told `other_joined`:
    /// every node restores its own, and nobody heard `bye`.
    fn restore(&mut self, now: Instant, from: &NodeId, sessions: Vec<SessionRecord>) {
        let mut lost = Vec::new();
        for rec in sessions {
            if self.sessions.contains_key(&rec.session) {
                // Resumed on a node that restored first: that one has it.
                lost.push(rec.session);
                continue;
            }
            let (session, peer, rooms) = (rec.session.clone(), rec.peer.clone(), rec.rooms.clone());
            let base = rec.base;
            self.register(from, rec);
            for name in rooms {
                let room = self
                    .rooms
                    .entry(name.clone())
                    .or_insert_with(|| Room::new(now));
                room.listed += listed_cost(None);
                room.members.push(Member {
                    session: session.clone(),
                    peer: peer.clone(),
                    meta: None,
                    joined: now,
                });
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.rooms.push(name);
                }
            }
            if let Some(s) = self.sessions.get_mut(&session) {
                s.base = base;
            }
        }
        self.push(
            from,
            Push::Resynced {
                lost,
                generation: self.generation,
            },
        );
    }
}

fn token_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn rec(session: &str, peer: &str) -> SessionRecord {
        SessionRecord {
            session: session.into(),
            token: "t".into(),
            peer: peer.into(),
            user: None,
            face: Face::Native,
            seq: 0,
            frames: Vec::new(),
            rooms: Vec::new(),
            epoch: 0,
            base: None,
        }
    }

    pub(super) fn join(req: ReqId, session: &str, room: &str, max_peers: usize) -> Command {
        Command::Join {
            req,
            session: session.into(),
            room: room.into(),
            meta: None,
            limits: SeatLimits {
                max_peers,
                max_listed: 0,
            },
            private: None,
            media: MediaKind::Mesh,
            relay: false,
        }
    }

    #[test]
    fn seats_are_claimed_atomically_and_the_others_hear_of_it() {
        let t = Instant::now();
        let (a, b) = (NodeId::new("a"), NodeId::new("b"));
        let mut st = Store::new(StoreConfig::default());
        st.handle(t, &a, Command::Register(rec("s1", "p1")));
        st.handle(t, &b, Command::Register(rec("s2", "p2")));
        st.handle(t, &b, Command::Register(rec("s3", "p3")));
        st.handle(t, &a, join(1, "s1", "r", 2));
        st.handle(t, &b, join(2, "s2", "r", 2));
        st.handle(t, &b, join(3, "s3", "r", 2));
        let pushes: Vec<_> = std::iter::from_fn(|| st.poll()).collect();
        assert!(matches!(
            &pushes[0],
            (n, Push::JoinAnswer { req: 1, outcome: SeatOutcome::Seated { peers, .. } }) if n == &a && peers.is_empty()
        ));
        assert!(matches!(
            &pushes[1],
            (n, Push::Deliver { event: RoomEvent::OtherJoined { .. }, .. }) if n == &a
        ));
        assert!(matches!(
            &pushes[2],
            (n, Push::JoinAnswer { req: 2, outcome: SeatOutcome::Seated { peers, .. } }) if n == &b && peers.len() == 1
        ));
        assert!(matches!(
            &pushes[3],
            (
                _,
                Push::JoinAnswer {
                    req: 3,
                    outcome: SeatOutcome::Full
                }
            )
        ));
    }

    #[test]
    fn the_join_that_makes_a_room_names_its_kind_and_media_node() {
        let t = Instant::now();
        let (a, b) = (NodeId::new("a"), NodeId::new("b"));
        let mut st = Store::new(StoreConfig::default());
        st.handle(t, &a, Command::Register(rec("s1", "p1")));
        st.handle(t, &b, Command::Register(rec("s2", "p2")));
        let sfu = |req, session: &str, relay| {
            let mut j = join(req, session, "r", 0);
            if let Command::Join {
                media, relay: r, ..
            } = &mut j
            {
                *media = MediaKind::Sfu;
                *r = relay;
            }
            j
        };
        // b without a media socket cannot make it; then both race, and
        // the one applied first (a) is the media node for both.
        st.handle(t, &b, sfu(1, "s2", false));
        st.handle(t, &a, sfu(2, "s1", true));
        st.handle(t, &b, sfu(3, "s2", true));
        let answers: Vec<SeatOutcome> = std::iter::from_fn(|| st.poll())
            .filter_map(|(_, p)| match p {
                Push::JoinAnswer { outcome, .. } => Some(outcome),
                _ => None,
            })
            .collect();
        assert_eq!(answers[0], SeatOutcome::NoRelay);
        for o in &answers[1..] {
            assert!(
                matches!(o, SeatOutcome::Seated { media: MediaKind::Sfu, media_node: Some(n), .. } if n == &a),
                "{o:?}"
            );
        }
        assert_eq!(st.media_of("r"), Some((MediaKind::Sfu, Some(a))));
    }

    #[test]
    fn a_take_moves_the_session_and_its_frames() {
        let t = Instant::now();
        let (a, b) = (NodeId::new("a"), NodeId::new("b"));
        let mut st = Store::new(StoreConfig::default());
        st.handle(t, &a, Command::Register(rec("s1", "p1")));
        for seq in 1..=3 {
            st.handle(
                t,
                &a,
                Command::Persist {
                    session: "s1".into(),
                    epoch: 0,
                    seq,
                    body: Bytes::from(vec![b'x'; seq as usize]),
                    sent: true,
                },
            );
        }
        st.handle(
            t,
            &b,
            Command::Take {
                req: 9,
                session: "s1".into(),
                token: "t".into(),
                last_seq: 1,
            },
        );
        let pushes: Vec<_> = std::iter::from_fn(|| st.poll()).collect();
        assert!(matches!(&pushes[0], (n, Push::Taken { .. }) if n == &a));
        match &pushes[1] {
            (
                n,
                Push::Took {
                    outcome: TakeOutcome::Taken(r),
                    ..
                },
            ) if n == &b => {
                assert_eq!(r.frames.iter().map(|f| f.0).collect::<Vec<_>>(), [2, 3]);
            }
            other => panic!("{other:?}"),
        }
        // The old owner's late frames are not the session's any more.
        st.handle(
            t,
            &a,
            Command::Persist {
                session: "s1".into(),
                epoch: 0,
                seq: 4,
                body: Bytes::from_static(b"late"),
                sent: true,
            },
        );
        st.handle(
            t,
            &b,
            Command::Take {
                req: 10,
                session: "s1".into(),
                token: "t".into(),
                last_seq: 3,
            },
        );
        match st.poll() {
            Some((
                _,
                Push::Took {
                    outcome: TakeOutcome::Taken(r),
                    ..
                },
            )) => {
                assert!(r.frames.is_empty());
                assert_eq!(r.seq, 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_silent_node_dies_and_its_sessions_are_adopted_once() {
        let t = Instant::now();
        let (a, b, c) = (NodeId::new("a"), NodeId::new("b"), NodeId::new("c"));
        let mut st = Store::new(StoreConfig::default());
        st.handle(t, &a, Command::Register(rec("s1", "p1")));
        st.handle(t, &b, Command::Heartbeat);
        st.handle(t, &c, Command::Heartbeat);
        let later = t + Duration::from_secs(10);
        st.handle(later, &b, Command::Heartbeat);
        st.handle(later, &c, Command::Heartbeat);
        st.handle_timeout(later);
        let died: Vec<_> = std::iter::from_fn(|| st.poll()).collect();
        assert_eq!(died.len(), 2, "{died:?}");
        st.handle(
            later,
            &b,
            Command::Adopt {
                req: 1,
                dead: a.clone(),
            },
        );
        st.handle(
            later,
            &c,
            Command::Adopt {
                req: 1,
                dead: a.clone(),
            },
        );
        let got: Vec<_> = std::iter::from_fn(|| st.poll()).collect();
        assert!(
            matches!(&got[0], (n, Push::Adopted { sessions, .. }) if n == &b && sessions.len() == 1)
        );
        assert!(
            matches!(&got[1], (n, Push::Adopted { sessions, .. }) if n == &c && sessions.is_empty())
        );
        // The dead node is told so, once, until it resyncs.
        st.handle(later, &a, Command::Heartbeat);
        st.handle(later, &a, Command::Heartbeat);
        let got: Vec<_> = std::iter::from_fn(|| st.poll()).collect();
        assert_eq!(got, vec![(a.clone(), Push::Dead)]);
        st.handle(
            later,
            &a,
            Command::Resync {
                sessions: vec![rec("s1", "p1")],
                generation: Some(1),
            },
        );
        assert_eq!(
            st.poll(),
            Some((
                a,
                Push::Resynced {
                    lost: vec!["s1".into()],
                    generation: 1,
                }
            ))
        );
    }

    #[test]
    fn replay_is_bounded_like_the_nodes() {
        let mut s = Stored {
            token: "t".into(),
            peer: "p".into(),
            user: None,
            face: Face::Native,
            owner: NodeId::new("a"),
            seq: 0,
            frames: VecDeque::new(),
            bytes: 0,
            rooms: Vec::new(),
            epoch: 0,
            base: None,
        };
        let cfg = StoreConfig {
            replay_frames: 3,
            replay_bytes: 25,
            node_timeout: Duration::from_secs(1),
        };
        for seq in 1..=5 {
            s.keep(seq, Bytes::from(vec![0; 10]), &cfg);
        }
        assert_eq!(s.frames.iter().map(|f| f.0).collect::<Vec<_>>(), [4, 5]);
        assert!(s.covers(3) && s.covers(9) && !s.covers(2));
        s.trim(4);
        assert_eq!(s.frames.len(), 1);
        assert_eq!(s.bytes, 10);
    }
}
