//! Who is in which room. This is the membership seam: a Redis backplane
//! replaces it with a check-and-join script and per-room channels, while the
//! rest of the core keeps asking the same questions.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::value::RawValue;
use switchboard_signal_proto::MediaKind;

use crate::idmap::IdMap;
use crate::session::Sid;

/// A room's internal key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RoomId(u64);

#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) sid: Sid,
    /// The `meta` of the member's join; `None` is shown as `{}`.
    pub(crate) meta: Option<Box<RawValue>>,
}

#[derive(Debug)]
pub(crate) struct Room {
    pub(crate) name: Box<str>,
    /// In join order.
    pub(crate) members: Vec<Member>,
    /// When each member joined, for the admin API's room views: beside
    /// `members` rather than in it, so that the fan-out loop's stride stays
    /// what it was.
    pub(crate) joined: Vec<Instant>,
    /// A call's room: only these two sessions may join.
    private_to: Option<[Sid; 2]>,
    /// What `joined` lists for this room, in bytes (see [`entry_bytes`]).
    listed_bytes: usize,
    /// When its first member came, for the admin API's room views.
    pub(crate) created: Instant,
    /// Decided by the join that made the room (PROTOCOL.md §7).
    pub(crate) media: MediaKind,
    /// In an SFU room, the members the media relay was told of
    /// (`MediaOutput::Joined`) and not yet told gone: native peers only.
    media_peers: Vec<Sid>,
}

/// What one member adds to its room's `joined`, roughly: its meta and the
/// peer id with its punctuation.
pub(crate) fn entry_bytes(meta: Option<&RawValue>) -> usize {
    meta.map_or(2, |m| m.get().len()) + crate::MEMBER_ENTRY_BYTES
}

/// Why a join did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Full,
    Private,
}

#[derive(Debug, Default)]
pub(crate) struct Rooms {
    by_id: IdMap<RoomId, Room>,
    by_name: HashMap<Box<str>, RoomId>,
    next: u64,
    /// Rooms of kind SFU, for `Stats`.
    sfu: usize,
}

impl Rooms {
    pub(crate) fn find(&self, name: &str) -> Option<RoomId> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn get(&self, id: RoomId) -> Option<&Room> {
        self.by_id.get(&id)
    }

    pub(crate) fn name(&self, id: RoomId) -> &str {
        self.by_id.get(&id).map_or("", |r| &r.name)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Rooms of kind SFU.
    pub(crate) fn sfu_len(&self) -> usize {
        self.sfu
    }

    /// Notes that the media relay now knows `sid` as a peer of the room.
    pub(crate) fn add_media_peer(&mut self, id: RoomId, sid: Sid) {
        if let Some(room) = self.by_id.get_mut(&id)
            && !room.media_peers.contains(&sid)
        {
            room.media_peers.push(sid);
        }
    }

    /// Whether the media relay knows `sid` as a peer of the room.
    pub(crate) fn is_media_peer(&self, id: RoomId, sid: Sid) -> bool {
        self.by_id
            .get(&id)
            .is_some_and(|r| r.media_peers.contains(&sid))
    }

    /// Forgets `sid` as a media peer; whether it was one (the relay must
    /// then hear that it left).
    pub(crate) fn take_media_peer(&mut self, id: RoomId, sid: Sid) -> bool {
        let Some(room) = self.by_id.get_mut(&id) else {
            return false;
        };
        let before = room.media_peers.len();
        room.media_peers.retain(|&x| x != sid);
        room.media_peers.len() != before
    }

    pub(crate) fn exists(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Every room, in no order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Room> {
        self.by_id.values()
    }

    fn create(
        &mut self,
        name: &str,
        private_to: Option<[Sid; 2]>,
        media: MediaKind,
        now: Instant,
    ) -> RoomId {
        self.next += 1;
        if media == MediaKind::Sfu {
            self.sfu += 1;
        }
        let id = RoomId(self.next);
        self.by_id.insert(
            id,
            Room {
                name: name.into(),
                members: Vec::new(),
                joined: Vec::new(),
                private_to,
                listed_bytes: 0,
                created: now,
                media,
                media_peers: Vec::new(),
            },
        );
        self.by_name.insert(name.into(), id);
        id
    }

    /// Reserves a call's room for exactly two sessions; they join it next.
    /// A call's room is a mesh room: the two peers reach each other.
    pub(crate) fn create_private(&mut self, name: &str, members: [Sid; 2], now: Instant) -> RoomId {
        self.create(name, Some(members), MediaKind::Mesh, now)
    }

    fn remove(&mut self, id: RoomId) {
        if let Some(room) = self.by_id.remove(&id) {
            self.by_name.remove(&room.name);
            if room.media == MediaKind::Sfu {
                self.sfu = self.sfu.saturating_sub(1);
            }
        }
    }

    /// Adds `sid` to the room `name`, making the room, of kind `media`, if
    /// needed (an existing room keeps its kind). The caller has checked
    /// that `sid` is not in it yet. `max_listed` bounds the room's `joined`
    /// in bytes (0 = no limit), like `max_peers` its count.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn join(
        &mut self,
        name: &str,
        sid: Sid,
        meta: Option<Box<RawValue>>,
        max_peers: usize,
        max_listed: usize,
        media: MediaKind,
        now: Instant,
    ) -> Result<RoomId, Refused> {
        let id = match self.find(name) {
            Some(id) => id,
            None => self.create(name, None, media, now),
        };
        let Some(room) = self.by_id.get_mut(&id) else {
            return Err(Refused::Private);
        };
        if room.private_to.is_some_and(|p| !p.contains(&sid)) {
            return Err(Refused::Private);
        }
        let cost = entry_bytes(meta.as_deref());
        if (max_peers != 0 && room.members.len() >= max_peers)
            || (max_listed != 0 && room.listed_bytes + cost > max_listed)
        {
            // A room made by this very join must not stay behind empty.
            if room.members.is_empty() {
                self.remove(id);
            }
            return Err(Refused::Full);
        }
        room.listed_bytes += cost;
        room.members.push(Member { sid, meta });
        room.joined.push(now);
        Ok(id)
    }

    /// Removes `sid`; a room left empty ends. Returns whether it was there.
    pub(crate) fn leave(&mut self, id: RoomId, sid: Sid) -> bool {
        let Some(room) = self.by_id.get_mut(&id) else {
            return false;
        };
        let Some(pos) = room.members.iter().position(|m| m.sid == sid) else {
            return false;
        };
        // `remove`, not `swap_remove`: `joined.peers` lists in join order.
        let gone = room.members.remove(pos);
        if pos < room.joined.len() {
            room.joined.remove(pos);
        }
        room.listed_bytes = room
            .listed_bytes
            .saturating_sub(entry_bytes(gone.meta.as_deref()));
        if room.members.is_empty() {
            self.remove(id);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: MediaKind = MediaKind::Mesh;

    #[test]
    fn rooms_live_while_they_have_members() {
        let t = Instant::now();
        let mut r = Rooms::default();
        let a = r.join("x", Sid(1), None, 2, 0, MESH, t).expect("join");
        assert_eq!(r.join("x", Sid(2), None, 2, 0, MESH, t), Ok(a));
        assert_eq!(r.join("x", Sid(3), None, 2, 0, MESH, t), Err(Refused::Full));
        assert!(r.leave(a, Sid(1)));
        assert!(!r.leave(a, Sid(1)));
        assert_eq!(r.len(), 1);
        assert!(r.leave(a, Sid(2)));
        assert_eq!(r.len(), 0);
        assert!(r.find("x").is_none());
        let p = r.create_private("call", [Sid(1), Sid(2)], t);
        assert_eq!(
            r.join("call", Sid(3), None, 0, 0, MESH, t),
            Err(Refused::Private)
        );
        assert_eq!(r.join("call", Sid(2), None, 0, 0, MESH, t), Ok(p));
        assert_eq!(r.name(p), "call");
    }

    #[test]
    fn join_times_follow_their_members() {
        let t = Instant::now();
        let at = |ms| t + std::time::Duration::from_millis(ms);
        let mut r = Rooms::default();
        let id = r.join("x", Sid(1), None, 0, 0, MESH, at(1)).expect("join");
        r.join("x", Sid(2), None, 0, 0, MESH, at(2)).expect("join");
        r.join("x", Sid(3), None, 0, 0, MESH, at(3)).expect("join");
        assert!(r.leave(id, Sid(2)));
        let room = r.get(id).expect("room");
        assert_eq!(room.created, at(1));
        let who: Vec<_> = room
            .members
            .iter()
            .map(|m| m.sid)
            .zip(room.joined.iter().copied())
            .collect();
        assert_eq!(who, [(Sid(1), at(1)), (Sid(3), at(3))]);
    }

    #[test]
    fn the_listing_budget_fills_a_room() {
        let meta = || {
            Some(RawValue::from_string(format!("{{\"a\":\"{}\"}}", "x".repeat(92))).expect("json"))
        };
        // 100 bytes of meta + 32 a member: two fit in 300 bytes.
        let t = Instant::now();
        let mut r = Rooms::default();
        let a = r.join("x", Sid(1), meta(), 0, 300, MESH, t).expect("join");
        assert_eq!(r.join("x", Sid(2), meta(), 0, 300, MESH, t), Ok(a));
        assert_eq!(
            r.join("x", Sid(3), meta(), 0, 300, MESH, t),
            Err(Refused::Full)
        );
        // A member with no meta costs 34 and still fits.
        assert_eq!(r.join("x", Sid(4), None, 0, 300, MESH, t), Ok(a));
        assert!(r.leave(a, Sid(1)));
        assert_eq!(r.join("x", Sid(3), meta(), 0, 300, MESH, t), Ok(a));
        // A join refused by the budget does not leave an empty room behind.
        assert_eq!(
            r.join("y", Sid(5), meta(), 0, 50, MESH, t),
            Err(Refused::Full)
        );
        assert!(r.find("y").is_none());
    }
}
