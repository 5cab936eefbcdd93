//! SFU rooms in a cluster (PROTOCOL.md §7, docs/scaling.md "SFU rooms and
//! the cluster"): a room's media lives on one node, its *media node*, which
//! the store names when the room is made. A peer signals through its own
//! node; when that is not the media node, what the single-node core hands
//! its SFU ([`MediaOutput`]) crosses the backplane as a
//! [`NodeMsg::Media`], and the media node's SFU answers the same way. The
//! media node's SDP carries its own candidates, so the media itself goes
//! straight from each client to the media node.

use std::time::Instant;

use switchboard_signal_proto::ErrorCode;

use crate::cluster::{Command, MediaMsg, NodeId, NodeMsg, Text};
use crate::clustered::{json_text, unavailable};
use crate::media::MediaOutput;
use crate::{Output, Refusal, SignalCore};

/// Where a room's media is relayed, as this node knows it.
enum Route {
    /// By this node's SFU.
    Here,
    /// By another node's.
    There(NodeId),
    /// Nowhere: its media node died and no member's node could take it.
    Nowhere,
}

fn no_media_node() -> Refusal {
    Refusal::new(
        ErrorCode::Unavailable,
        "media node lost: no node of this room's members relays media",
    )
}

impl SignalCore {
    /// Whether this node has a media socket (`media.listen` bound): only
    /// then may a join through it make an SFU room, whose media node it
    /// becomes. Call it before the node serves clients; a clustered core
    /// starts without one.
    pub fn set_media_relay(&mut self, on: bool) {
        if let Some(c) = &mut self.cluster {
            c.relay = on;
        }
    }

    /// A graceful stop: this node relays media no more, and the SFU rooms
    /// it is the media node of move now, not a node timeout after it is
    /// gone (the store names their new media nodes, as at a death). Drain
    /// [`SignalCore::poll_output`] after it.
    pub fn media_away(&mut self) {
        self.flush_ack();
        let Some(c) = &mut self.cluster else {
            return;
        };
        let was = std::mem::replace(&mut c.relay, false);
        if was && c.up {
            self.command(Command::MediaAway);
        }
    }

    /// Notes the media node the store gave for the SFU room `room`.
    pub(crate) fn media_node_is(&mut self, room: &Text, node: Option<NodeId>) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        if node.as_ref() == Some(&c.node) {
            c.media_nodes.remove(room);
        } else {
            c.media_nodes.insert(room.clone(), node);
        }
    }

    fn media_route(&self, room: &str) -> Route {
        match self.cluster.as_ref().and_then(|c| c.media_nodes.get(room)) {
            None => Route::Here,
            Some(Some(node)) => Route::There(node.clone()),
            Some(None) => Route::Nowhere,
        }
    }

    /// Hands `out` to the room's SFU: this node's (as [`Output::Media`]),
    /// or the media node's over the backplane. A `media` request that
    /// cannot go is refused; a join or leave that cannot is the media
    /// node's loss to notice (its node-death handling, or an error frame
    /// here for a join).
    pub(crate) fn media_out(&mut self, out: MediaOutput) -> Result<(), Refusal> {
        if self.cluster.is_none() {
            // A node alone: its own SFU, as before clusters had any.
            self.outbox.push(Output::Media(out));
            return Ok(());
        }
        let (room, peer) = match &out {
            MediaOutput::Joined { room, peer, .. }
            | MediaOutput::Left { room, peer }
            | MediaOutput::Signal { room, peer, .. } => (room.clone(), peer.clone()),
        };
        let node = match self.media_route(&room) {
            Route::Here => {
                // A session that moved here whose SFU session is here
                // already (it signaled through another node): it goes on.
                if let (MediaOutput::Joined { .. }, Some(c)) = (&out, &mut self.cluster)
                    && c.remote_media
                        .remove(&(Text::from(room.as_str()), Text::from(peer.as_str())))
                        .is_some()
                {
                    return Ok(());
                }
                self.outbox.push(Output::Media(out));
                return Ok(());
            }
            Route::There(node) => node,
            Route::Nowhere => {
                return match out {
                    MediaOutput::Left { .. } => Ok(()),
                    MediaOutput::Joined { .. } => {
                        let e = no_media_node();
                        self.media_error_here(&room, &peer, e.code, &e.message);
                        Ok(())
                    }
                    MediaOutput::Signal { .. } => Err(no_media_node()),
                };
            }
        };
        let what = match out {
            MediaOutput::Joined { .. } => MediaMsg::Joined,
            MediaOutput::Left { .. } => MediaMsg::Left,
            MediaOutput::Signal { data, .. } => {
                if self.cluster_down() {
                    return Err(unavailable());
                }
                MediaMsg::Signal(Text::from(data.get()))
            }
        };
        if matches!(what, MediaMsg::Left)
            && self.rooms.find(&room).is_none()
            && let Some(c) = &mut self.cluster
        {
            c.media_nodes.remove(room.as_str());
        }
        self.command(Command::Tell {
            to: node,
            msg: NodeMsg::Media {
                room: room.into(),
                peer: peer.into(),
                what,
            },
        });
        Ok(())
    }

    /// The SFU here answers a peer that signals through another node:
    /// `what` goes to that node. False when no such remote peer is known.
    pub(crate) fn media_to_remote(&mut self, room: &str, peer: &str, what: MediaMsg) -> bool {
        if self.cluster.is_none() {
            return false;
        }
        let key = (Text::from(room), Text::from(peer));
        let Some(node) = self
            .cluster
            .as_ref()
            .and_then(|c| c.remote_media.get(&key).filter(|n| **n != c.node))
            .cloned()
        else {
            // Unknown, or a session that left this node and whose new node
            // has not said so yet: the client re-offers after its resume.
            return false;
        };
        let (room, peer) = key;
        self.command(Command::Tell {
            to: node,
            msg: NodeMsg::Media { room, peer, what },
        });
        true
    }

    /// A [`NodeMsg::Media`] from `from`.
    pub(crate) fn media_told(
        &mut self,
        now: Instant,
        from: NodeId,
        room: Text,
        peer: Text,
        what: MediaMsg,
    ) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let key = (room, peer);
        // A session moves between nodes (a resume elsewhere, an adoption)
        // and its SFU session stays: whichever node signals for it now may
        // leave it.
        let theirs = c.remote_media.contains_key(&key);
        // Answers are taken only from the room's media node as this node
        // knows it: a late one from a node that lost the room is dropped.
        let from_media_node = c.media_nodes.get(&key.0) == Some(&Some(from.clone()));
        let (room, peer) = (key.0.to_string(), key.1.to_string());
        match what {
            MediaMsg::Joined => {
                // Known already: its session moved to `from`, and its SFU
                // session goes on.
                if c.remote_media.insert(key, from).is_some() {
                    return;
                }
                self.outbox.push(Output::Media(MediaOutput::Joined {
                    room,
                    peer,
                    conn: None,
                }));
            }
            MediaMsg::Left if theirs => {
                c.remote_media.remove(&key);
                self.outbox
                    .push(Output::Media(MediaOutput::Left { room, peer }));
            }
            MediaMsg::Signal(data) if theirs => {
                // The peer's node checked it; the backplane is not trusted
                // to keep it JSON.
                if let Some(data) = json_text(&data) {
                    self.outbox
                        .push(Output::Media(MediaOutput::Signal { room, peer, data }));
                }
            }
            MediaMsg::Reply(data) if from_media_node => {
                if let Some(data) = json_text(&data) {
                    self.send_media_here(now, &room, &peer, &data);
                }
            }
            MediaMsg::Error { code, message } if from_media_node => {
                self.media_error_here(&room, &peer, code, &message);
            }
            _ => {}
        }
    }

    /// `node` died. The peers it signaled for keep their SFU sessions here
    /// (their media runs on UDP): their sessions move to the node that
    /// adopts them, which says so with a `Joined`, or end there with a
    /// `Left`. Rooms whose media it relayed have none until the store
    /// names another ([`Push::MediaNode`](crate::cluster::Push::MediaNode),
    /// right after).
    pub(crate) fn media_node_died(&mut self, node: &NodeId) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        for n in c.media_nodes.values_mut() {
            if n.as_ref() == Some(node) {
                *n = None;
            }
        }
    }

    /// The store's word, before a session moves here, that `room` is an
    /// SFU room with media node `node`.
    pub(crate) fn room_media(&mut self, room: Text, node: Option<NodeId>) {
        self.media_node_is(&room, node);
        if let Some(c) = &mut self.cluster {
            c.moving_sfu.insert(room);
        }
    }

    /// The sessions the store's `RoomMedia` pushes were about are here.
    pub(crate) fn moved_in(&mut self) {
        if let Some(c) = &mut self.cluster {
            c.moving_sfu.clear();
        }
    }

    /// Whether a session moving here sits in `room` as an SFU room.
    pub(crate) fn moving_into_sfu(&self, room: &str) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.moving_sfu.contains(room))
    }

    /// A native session moved here (installed in its rooms): in each SFU
    /// room it is a media peer again, its signaling through this node,
    /// and the media node hears so: its SFU session goes on (a resume
    /// here), or with `reset` (an adoption: its node died, maybe the
    /// room's media node with it) starts afresh, and the client hears
    /// "media node lost" to make a new connection.
    pub(crate) fn media_moved_here(&mut self, sid: crate::session::Sid, reset: bool) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        if s.face != crate::Face::Native {
            return;
        }
        let (peer, conn) = (s.peer.to_string(), s.conn);
        let rooms: Vec<(crate::rooms::RoomId, String)> = s
            .rooms
            .iter()
            .filter_map(|&rid| {
                let r = self.rooms.get(rid)?;
                (r.media == switchboard_signal_proto::MediaKind::Sfu)
                    .then(|| (rid, r.name.to_string()))
            })
            .collect();
        for (rid, room) in rooms {
            self.rooms.add_media_peer(rid, sid);
            if reset {
                if let Some(c) = &mut self.cluster {
                    // Not a session going on here: see `media_out`.
                    c.remote_media
                        .remove(&(Text::from(room.as_str()), peer.as_str().into()));
                }
                self.media_error_here(&room, &peer, ErrorCode::Unavailable, "media node lost");
                let _ = self.media_out(MediaOutput::Left {
                    room: room.clone(),
                    peer: peer.clone(),
                });
            }
            let _ = self.media_out(MediaOutput::Joined {
                room,
                peer: peer.clone(),
                conn,
            });
        }
    }

    /// A session leaves this node for another (taken by a resume there):
    /// the SFU here keeps its media peers' sessions, until the node that
    /// has it now says `Joined` or `Left`.
    pub(crate) fn media_moving_away(&mut self, sid: crate::session::Sid) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let peer = s.peer.clone();
        let mut keep = Vec::new();
        for &rid in &s.rooms {
            if self.rooms.is_media_peer(rid, sid)
                && matches!(self.media_route(self.rooms.name(rid)), Route::Here)
            {
                keep.push(Text::from(self.rooms.name(rid)));
            }
        }
        if let Some(c) = &mut self.cluster {
            let me = c.node.clone();
            for room in keep {
                c.remote_media.insert((room, peer.clone()), me.clone());
            }
        }
    }

    /// The store named `node` the media node of `room`, its old one dead:
    /// every local media peer gets `error` `unavailable` ("media node
    /// lost"), its RTCPeerConnection being dead, and is handed to the new
    /// node's SFU, where the client's new connection's offer lands.
    pub(crate) fn media_moved(&mut self, room: &Text, node: Option<NodeId>) {
        let Some(rid) = self.rooms.find(room) else {
            return;
        };
        let found = node.is_some();
        self.media_node_is(room, node);
        let peers: Vec<(String, Option<crate::ConnId>)> = self
            .rooms
            .get(rid)
            .map(|r| {
                r.members
                    .iter()
                    .filter(|m| self.rooms.is_media_peer(rid, m.sid))
                    .filter_map(|m| {
                        let s = self.sessions.get(&m.sid)?;
                        Some((s.peer.to_string(), s.conn))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (peer, conn) in peers {
            let message = if found {
                "media node lost"
            } else {
                "media node lost: no node of this room's members relays media"
            };
            self.media_error_here(room, &peer, ErrorCode::Unavailable, message);
            if found {
                let _ = self.media_out(MediaOutput::Joined {
                    room: room.to_string(),
                    peer,
                    conn,
                });
            }
        }
    }
}
