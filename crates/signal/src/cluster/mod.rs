//! The backplane contract (PROTOCOL.md §6): what a node's core asks of the
//! cluster and what it hears back, as plain values.
//!
//! A clustered core (see [`SignalCore::clustered`](crate::SignalCore::clustered))
//! emits [`Command`]s as [`Output::Backplane`](crate::Output::Backplane) and
//! takes [`Push`]es through [`SignalCore::handle_push`](crate::SignalCore::handle_push).
//! Between them sits a *store*: one serial authority that owns what no node
//! can decide alone (who sits in a room, which node owns a session, a
//! session's undelivered frames). [`store::Store`] is that authority in
//! memory: the simulated cluster of the tests talks to it over a bus, and
//! the Redis backplane of the shell implements the same commands as Lua
//! scripts, so it is also the reference the Redis code is checked against.
//!
//! # What the transport must guarantee
//! - The commands of one node reach the store in the order they were
//!   emitted, and the store applies each one atomically (Redis: one
//!   connection per node, one script per command).
//! - The pushes to one node arrive in the order the store produced them
//!   (Redis: every push, answers included, is published on the node's own
//!   channel, which one subscriber connection reads).
//! - Either may stop (a partition, Redis down): the shell then calls
//!   [`SignalCore::backplane_down`](crate::SignalCore::backplane_down), and
//!   [`SignalCore::backplane_up`](crate::SignalCore::backplane_up) when it is
//!   back; the core resyncs from there.
//!
//! # Why the promise holds across nodes
//! A node counts a delivery in an ack only after the store has confirmed
//! that the recipient's session is still owned by the node that queued the
//! frame, and that the frame was written before that confirmation (commands
//! are in order): [`Command::Publish`]'s `local` list and [`Command::Report`]
//! are checked by the store, never taken on trust. A session taken over by
//! another node (a resume elsewhere) or adopted after a node's death carries
//! every frame that was counted for it.

pub mod store;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use switchboard_signal_proto::{CallEndReason, ErrorCode, MediaKind};

use crate::Face;

/// A node of the cluster (`cluster.node_id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub Arc<str>);

impl NodeId {
    /// A node id from its text.
    pub fn new(id: &str) -> Self {
        NodeId(id.into())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Numbers a command whose answer the node waits for; unique per node.
pub type ReqId = u64;

/// Shared text: ids, room names, metas and message data cross the
/// backplane without a copy per recipient.
pub type Text = Arc<str>;

/// A session id with the [`SessionRecord::epoch`] of the node's copy: what
/// the store checks before it counts or keeps anything for a session.
pub type Copy = (Text, u32);

/// Something that happened in a room, for the peers on other nodes. Each
/// node renders it for its own sessions (native frame or classic event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// `peer` joined with `meta` (JSON text; `None` shown as `{}`).
    OtherJoined {
        /// Its peer id.
        peer: Text,
        /// Its join's `meta`.
        meta: Option<Text>,
    },
    /// `peer` left or its session ended.
    Bye {
        /// Its peer id.
        peer: Text,
    },
    /// A room message from `from`: `data` is the sender's JSON text.
    Message {
        /// The sender's peer id.
        from: Text,
        /// The message's `data`, as the sender wrote it.
        data: Text,
    },
}

/// Caps a seat claim checks, from the joining node's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeatLimits {
    /// `rooms.max_peers`; 0 = no limit.
    pub max_peers: usize,
    /// `limits.max_room_meta_bytes` on the room's listing; 0 = no limit.
    pub max_listed: usize,
}

/// A room as the store lists it for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// Its name.
    pub room: Text,
    /// How many members it has.
    pub peers: u64,
    /// Milliseconds since its first member's seat, on the store's clock
    /// (nodes' clocks need not agree: each subtracts it from its own now).
    pub age_ms: u64,
    /// Its kind.
    pub media: MediaKind,
}

/// One member of a room as the store knows it, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its peer id.
    pub peer: Text,
    /// Its session's user id.
    pub user: Option<Text>,
    /// Its join's `meta` (JSON text).
    pub meta: Option<Text>,
    /// The node that owns its session.
    pub node: NodeId,
    /// Milliseconds since its seat, on the store's clock.
    pub age_ms: u64,
}

/// A room's members, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMembers {
    /// Milliseconds since the room's first seat, on the store's clock.
    pub age_ms: u64,
    /// Its kind.
    pub media: MediaKind,
    /// In join order.
    pub members: Vec<MemberInfo>,
}

/// What a session is, as the store keeps it for a resume on another node
/// or an adoption after its node died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id.
    pub session: Text,
    /// Resume token. The store holds it so that any node can check a
    /// resume; nodes authenticate to each other only through the store.
    pub token: Text,
    /// Peer id.
    pub peer: Text,
    /// User id, for direct calls.
    pub user: Option<Text>,
    /// Wire face.
    pub face: Face,
    /// The `seq` of the last frame the session was sent.
    pub seq: u64,
    /// Kept frames, oldest first, with their `seq` (in a [`Push::Took`],
    /// only those after the resume's `last_seq`).
    pub frames: Vec<(u64, Bytes)>,
    /// The rooms it is in, in join order.
    pub rooms: Vec<Text>,
    /// Which move of the session this copy belongs to: every take and
    /// adoption starts a new one. A node may hold a copy of an older move
    /// for a moment (it learns of the move later); the store neither counts
    /// nor keeps what such a copy got, even on the same node.
    pub epoch: u32,
    /// Set when the session moved to a node (adopted from a dead one, or
    /// taken by a resume whose connection is gone) and no frame has reached
    /// a live connection of it since: the `seq` the store had then. The
    /// node it moved from may still have served the client, cut off from
    /// the store, with frames the store never got: the frames after `base`
    /// are numbered for now only, and follow the client's `last_seq` when
    /// it resumes (see [`Command::Take`]).
    pub base: Option<u64>,
}

/// What a node asks of the store. Emitted in order; see the module doc for
/// what the transport guarantees.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// The node is alive (every command also counts as one). Emitted every
    /// third of `node_timeout`.
    Heartbeat,
    /// A new session lives on this node.
    Register(SessionRecord),
    /// Claim a seat in `room` for `session`: answered by
    /// [`Push::JoinAnswer`]. The other members' nodes get
    /// [`RoomEvent::OtherJoined`] when it is granted.
    Join {
        /// Answer's key.
        req: ReqId,
        /// The joining session.
        session: Text,
        /// The room.
        room: Text,
        /// The join's `meta` as JSON text.
        meta: Option<Text>,
        /// The caps to check.
        limits: SeatLimits,
        /// A call's room: only these two peers may sit in it.
        private: Option<[Text; 2]>,
        /// The room's kind if this join makes it (PROTOCOL.md §7); a join
        /// of a room that exists gets the room's.
        media: MediaKind,
        /// This node has a media socket: it may make an SFU room, whose
        /// media node it then is. A join that would make one without it is
        /// [`SeatOutcome::NoRelay`].
        relay: bool,
    },
    /// `session` leaves `room`: the others' nodes get [`RoomEvent::Bye`].
    Leave {
        /// The leaving session.
        session: Text,
        /// The room.
        room: Text,
    },
    /// Fan `event` out to the nodes of the room's other members (or of the
    /// member whose peer id is `to`). With `req`, answered by
    /// [`Push::Published`], which also counts `local` (sessions of this
    /// node that got it) and `classic`.
    Publish {
        /// Answer's key; `None` when nobody waits for a count.
        req: Option<ReqId>,
        /// The room.
        room: Text,
        /// Only this peer, when set.
        to: Option<Text>,
        /// What happened.
        event: RoomEvent,
        /// Native sessions on this node that have the frame: counted when
        /// still this node's copy, and never sent it again through another
        /// node (one just taken over may already have it).
        local: Vec<Copy>,
        /// Socket.IO recipients on this node that have it.
        classic: u64,
    },
    /// A sequenced frame a session of this node got: kept for a resume
    /// elsewhere, within the replay bounds. The only command whose outcome
    /// the node needs (through
    /// [`SignalCore::persisted`](crate::SignalCore::persisted), in order):
    /// the frame goes to the client only once the store has it, and not at
    /// all when the store refuses it (the session is another node's now).
    Persist {
        /// The session.
        session: Text,
        /// The copy's epoch.
        epoch: u32,
        /// Its `seq`.
        seq: u64,
        /// The frame without `seq`.
        body: Bytes,
        /// Whether it goes to a live connection of the session. Frames kept
        /// for a session with none, after it moved here (see `base`), are
        /// numbered for now only.
        sent: bool,
    },
    /// Asks for the route of `room` from this node: answered by
    /// [`Push::Route`]. A node keeps it to send room messages with
    /// [`Command::Forward`], until the store says it changed.
    Route {
        /// The room.
        room: Text,
    },
    /// The hot path of [`Command::Publish`], for a message nobody waits
    /// for a count of: `to`'s node gets the [`Push::Deliver`] (from this
    /// node, no `req`) as it is, with no script and no check, as a plain
    /// `PUBLISH` on its channel. The sender took `sessions` from a
    /// [`Push::Route`] it holds; a recipient's node delivers only to those
    /// of them that it still holds in `room`.
    Forward {
        /// The recipients' node.
        to: NodeId,
        /// The room.
        room: Text,
        /// What happened.
        event: RoomEvent,
        /// The recipients, all of them `to`'s.
        sessions: Vec<Text>,
    },
    /// The hot path of [`Command::Persist`]: the frame is added to the
    /// frames kept for `(session, epoch)`, with no check and no refusal, so
    /// that Redis runs it as a plain `RPUSH` (no script). The epoch fences
    /// it: a copy that is not the session's current one writes where
    /// nobody reads (a take or an adoption moves the frames to the next
    /// epoch's list), and [`Command::Drop`] clears that away. With `keep`,
    /// only the newest `keep` frames of that epoch stay: the node's own
    /// replay buffer, which the same bounds fill the same way, says how
    /// many. Answered like a `Persist`, always applied.
    ///
    /// A node sends `Persist` instead when the store must check or clear
    /// something: replay is off (only `seq` is kept), or the frame is the
    /// first to reach a live connection since the session moved here (the
    /// store clears the session's `base`).
    Append {
        /// The session.
        session: Text,
        /// The copy's epoch.
        epoch: u32,
        /// Its `seq`.
        seq: u64,
        /// The frame without `seq`.
        body: Bytes,
        /// How many of the epoch's newest frames stay, when some go.
        keep: Option<u32>,
    },
    /// The node forgot its copy `(session, epoch)` (the session lives on
    /// elsewhere): what [`Command::Append`] wrote for that epoch after the
    /// session moved goes. Nothing happens when that epoch is the
    /// session's current one.
    Drop {
        /// The session.
        session: Text,
        /// The forgotten copy's epoch.
        epoch: u32,
    },
    /// The client confirmed every frame up to `last_seq`.
    Trim {
        /// The session.
        session: Text,
        /// The confirmed `seq`.
        last_seq: u64,
    },
    /// How many of a [`Push::Deliver`] or [`Push::Ring`] with a `req` this
    /// node's sessions got: the store counts those it still owns and
    /// answers `to` with [`Push::Counted`].
    Report {
        /// The node that waits.
        to: NodeId,
        /// Its key.
        req: ReqId,
        /// Native sessions that have the frame.
        sessions: Vec<Copy>,
        /// Socket.IO recipients that have it.
        classic: u64,
    },
    /// The session is over for good: its seats go (with `bye`s) and so
    /// does everything the store kept of it.
    End {
        /// The session.
        session: Text,
    },
    /// A resume on this node of a session the node does not hold:
    /// answered by [`Push::Took`]; the old owner gets [`Push::Taken`]. A
    /// session adopted from a dead node may be resumed with a `last_seq`
    /// beyond what the store has (that node, cut off from the store, served
    /// its clients alone before it died): the frames kept since the
    /// adoption are then numbered after it.
    Take {
        /// Answer's key.
        req: ReqId,
        /// The session id the client named.
        session: Text,
        /// The resume token it gave.
        token: Text,
        /// Its `last_seq`.
        last_seq: u64,
    },
    /// A session of this node resumed here: its frames reach a live
    /// connection again. For one that came here without a connection (see
    /// [`SessionRecord::base`]), the frames kept since are numbered after
    /// `last_seq` when it is beyond `base`, as a take does; `seq` is the
    /// session's after that. Answered like a `Persist`.
    Resumed {
        /// The session.
        session: Text,
        /// The copy's epoch.
        epoch: u32,
        /// The client's `last_seq`.
        last_seq: u64,
        /// The session's `seq` after the resume.
        seq: u64,
    },
    /// Take over the sessions of a dead node (the first asker gets them):
    /// answered by [`Push::Adopted`].
    Adopt {
        /// Answer's key.
        req: ReqId,
        /// The dead node.
        dead: NodeId,
    },
    /// Ring `user`'s native sessions on every node (but `except`): each
    /// node gets [`Push::Ring`]; answered by [`Push::Published`].
    Ring {
        /// Answer's key.
        req: ReqId,
        /// The call id.
        call: Text,
        /// The callee's user id.
        user: Text,
        /// The caller's own session, never rung.
        except: Text,
        /// The `incoming_call` frame.
        body: Bytes,
    },
    /// A message for one node (the calls' conversation).
    Tell {
        /// The node.
        to: NodeId,
        /// What to tell it.
        msg: NodeMsg,
    },
    /// The node stops relaying media (a graceful stop): each SFU room it is
    /// the media node of moves at once, as at its death
    /// ([`Push::MediaNode`] to the members' nodes, this one included), and
    /// no room's media moves to it any more.
    MediaAway,
    /// The admin API's room list: answered by [`Push::Rooms`].
    Rooms {
        /// Answer's key.
        req: ReqId,
    },
    /// The admin API's view of one room: answered by [`Push::Room`].
    Room {
        /// Answer's key.
        req: ReqId,
        /// The room.
        room: Text,
    },
    /// The admin API's kick (of `peer`, or with `None` of every member):
    /// each member's node gets [`Push::Kick`] and removes it as a leave
    /// would (a member whose node is dead is unseated by the store, `bye`
    /// to the others); answered by [`Push::Kicked`].
    Kick {
        /// Answer's key.
        req: ReqId,
        /// The room.
        room: Text,
        /// The member's peer id; `None`: every member (close the room).
        peer: Option<Text>,
    },
    /// At start, after a partition or a Redis restart: every session this
    /// node holds, as it is now. The store makes itself agree and answers
    /// [`Push::Resynced`] with the sessions that are no longer this node's.
    /// A store that lost everything (a Redis restart without persistence:
    /// its `generation` is not the one the node last saw) takes the node's
    /// sessions back as they are, seats included.
    Resync {
        /// The node's sessions.
        sessions: Vec<SessionRecord>,
        /// The store's generation in the node's last [`Push::Resynced`].
        generation: Option<u64>,
    },
}

/// How a seat claim went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatOutcome {
    /// Seated; the other members, in join order, with their metas, and
    /// the room's kind and media node as they were at the seat (one
    /// answer: two nodes never see two media nodes for one room).
    Seated {
        /// `(peer, meta)` of each other member.
        peers: Vec<(Text, Option<Text>)>,
        /// The room's kind, decided by the join that made it.
        media: MediaKind,
        /// An SFU room's media node: the node whose SFU relays the room's
        /// media. `None` for a mesh room, or an SFU room whose media node
        /// died with no member's node left that has a media socket.
        media_node: Option<NodeId>,
    },
    /// At capacity.
    Full,
    /// A private call room that is not this peer's.
    Forbidden,
    /// The join would make an SFU room, and its node has no media socket
    /// (`relay: false`): nothing changed.
    NoRelay,
}

/// How a [`Command::Take`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeOutcome {
    /// The session is this node's now; `frames` are those after `last_seq`.
    Taken(SessionRecord),
    /// No such session, a wrong token, or a Socket.IO session.
    Unknown,
    /// The right token, but the frames after `last_seq` are gone: the
    /// session is this node's, to end (`bye`) and start over.
    Gap(SessionRecord),
}

/// What the store tells a node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Push {
    /// The answer to [`Command::Route`]: the members of `room` that live
    /// nodes other than the asking one own, by node, in member order, as
    /// `(session, peer)`. Good until a [`Push::Deliver`] of a join or a
    /// leave in the room, a [`Push::Rerouted`] of it or a
    /// [`Push::NodeDied`].
    Route {
        /// The room.
        room: Text,
        /// Each node with its members there.
        nodes: Vec<(NodeId, Vec<(Text, Text)>)>,
    },
    /// A member of `room` moved to another node (a take, an adoption):
    /// the route this node holds for it is stale. Sent to the nodes of its
    /// members, the one it moved to included.
    Rerouted {
        /// The room.
        room: Text,
    },
    /// The answer to [`Command::Join`].
    JoinAnswer {
        /// The command's key.
        req: ReqId,
        /// How it went.
        outcome: SeatOutcome,
    },
    /// The answer to [`Command::Publish`] or [`Command::Ring`]: `counted`
    /// of the local recipients are confirmed, and each of `nodes` will
    /// answer with a [`Push::Counted`] (or die).
    Published {
        /// The command's key.
        req: ReqId,
        /// Confirmed local recipients.
        counted: u64,
        /// The nodes that got the event.
        nodes: Vec<NodeId>,
    },
    /// A room event from another node, for this node's members of `room`
    /// named in `sessions` (those the store gave this node when it routed
    /// it: a session that moved here since was another node's to serve).
    Deliver {
        /// The publishing node, which waits for a [`Command::Report`] when
        /// `req` is set.
        from: NodeId,
        /// Its key.
        req: Option<ReqId>,
        /// The room.
        room: Text,
        /// What happened.
        event: RoomEvent,
        /// The recipients on this node.
        sessions: Vec<Text>,
    },
    /// One node's confirmed count for `req`.
    Counted {
        /// The command's key.
        req: ReqId,
        /// The node that reported.
        from: NodeId,
        /// Its confirmed recipients.
        count: u64,
    },
    /// The answer to [`Command::Take`].
    Took {
        /// The command's key.
        req: ReqId,
        /// How it went.
        outcome: TakeOutcome,
    },
    /// A session of this node was resumed elsewhere: forget it without a
    /// `bye` (and close its connection, if any).
    Taken {
        /// The session.
        session: Text,
    },
    /// The answer to [`Command::Adopt`]: these sessions are this node's
    /// now, as they were when their node died.
    Adopted {
        /// The command's key.
        req: ReqId,
        /// The sessions (every kept frame included).
        sessions: Vec<SessionRecord>,
    },
    /// A node stopped refreshing its heartbeat.
    NodeDied {
        /// The node.
        node: NodeId,
    },
    /// `room`, a room of a session that moves to this node (sent right
    /// before the [`Push::Took`] or [`Push::Adopted`] that brings it), is
    /// an SFU room whose media node is `node`: the session's media goes on
    /// there, its signaling through this node now.
    RoomMedia {
        /// The room.
        room: Text,
        /// Its media node.
        node: Option<NodeId>,
    },
    /// The media node of the SFU room `room` died: the store named `node`
    /// instead (the node of the first remaining member, in join order, that
    /// has a media socket; `None` when no member's has). Sent, right after
    /// the [`Push::NodeDied`], to every live node with members in the
    /// room: their media peers make a new connection, with the new node.
    MediaNode {
        /// The room.
        room: Text,
        /// Its new media node.
        node: Option<NodeId>,
    },
    /// A call for `user`'s sessions on this node (but `except`).
    Ring {
        /// The caller's node, which waits for a [`Command::Report`].
        from: NodeId,
        /// Its key.
        req: ReqId,
        /// The call id.
        call: Text,
        /// The callee's user id.
        user: Text,
        /// The caller's session.
        except: Text,
        /// The `incoming_call` frame.
        body: Bytes,
    },
    /// A [`Command::Tell`] from another node.
    Told {
        /// The node that told.
        from: NodeId,
        /// What it said.
        msg: NodeMsg,
    },
    /// The answer to [`Command::Resync`]: these sessions are not this
    /// node's any more (resumed elsewhere, or adopted while the node was
    /// cut off).
    Resynced {
        /// Their ids.
        lost: Vec<Text>,
        /// The store's generation: new each time it starts empty.
        generation: u64,
    },
    /// The store had declared this node dead: its commands are ignored
    /// until it resyncs.
    Dead,
    /// The answer to [`Command::Rooms`]: every room, by name (byte order).
    Rooms {
        /// The command's key.
        req: ReqId,
        /// The rooms.
        rooms: Vec<RoomInfo>,
    },
    /// The answer to [`Command::Room`]; `None` when there is no such room.
    Room {
        /// The command's key.
        req: ReqId,
        /// Its members.
        room: Option<RoomMembers>,
    },
    /// The answer to [`Command::Kick`]: how many members were kicked, or
    /// `None` when there is no such room.
    Kicked {
        /// The command's key.
        req: ReqId,
        /// How many.
        kicked: Option<u64>,
    },
    /// An operator kicked these sessions of this node out of `room` (see
    /// [`Command::Kick`]): each gets `kicked` and leaves.
    Kick {
        /// The room.
        room: Text,
        /// The sessions.
        sessions: Vec<Text>,
    },
}

/// What nodes say to each other about a ringing call. The caller's node
/// decides; the callee's nodes ask and carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeMsg {
    /// Callee's node → caller's node: `session` (peer `peer`) accepts.
    Accept {
        /// The call.
        call: Text,
        /// The accepting session.
        session: Text,
        /// Its peer id.
        peer: Text,
    },
    /// Callee's node → caller's node: `session` declines.
    Decline {
        /// The call.
        call: Text,
        /// The declining session.
        session: Text,
    },
    /// Caller's node → the accepting session's node: it won; join `room`
    /// (private to the two peers).
    Won {
        /// The call.
        call: Text,
        /// The winning session.
        session: Text,
        /// The call's room.
        room: Text,
        /// The caller's peer id, the room's other seat.
        caller: Text,
    },
    /// Caller's node → an accepting or declining session's node: the call
    /// no longer rings (`no_such_call`).
    Lost {
        /// The call.
        call: Text,
        /// The session that asked.
        session: Text,
    },
    /// Caller's node → every node that rang: the call is over for the
    /// sessions rung there (but `except`).
    Ended {
        /// The call.
        call: Text,
        /// Why.
        reason: CallEndReason,
        /// The session that answered or declined, told otherwise.
        except: Option<Text>,
    },
    /// Callee's node → caller's node: no session rung on this node is left.
    RingGone {
        /// The call.
        call: Text,
    },
    /// About `peer`'s media in the SFU room `room` (PROTOCOL.md §7), between
    /// the peer's own node and the room's media node (see [`MediaMsg`]).
    Media {
        /// The room.
        room: Text,
        /// The peer.
        peer: Text,
        /// What happened.
        what: MediaMsg,
    },
}

/// The media of a peer whose node is not its SFU room's media node: the
/// peer's node hands the media node what the single-node core would hand
/// its own SFU (`MediaOutput`), and the media node's SFU answers the same
/// way. The store keeps the order of one node's tells, so a signal never
/// overtakes the join it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaMsg {
    /// Peer's node → media node: the peer entered the room.
    Joined,
    /// Peer's node → media node: the peer is out of the room for good.
    Left,
    /// Peer's node → media node: a checked `media` request's `data` (JSON
    /// text).
    Signal(Text),
    /// Media node → peer's node: the SFU's `data` for a `media` frame.
    Reply(Text),
    /// Media node → peer's node: an `error` frame about the peer's media.
    Error {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: Text,
    },
}
