//! Who is in which room. This is the membership seam: a Redis backplane
//! replaces it with a check-and-join script and per-room channels, while the
//! rest of the core keeps asking the same questions.

use std::collections::HashMap;

use serde_json::value::RawValue;

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
    /// A call's room: only these two sessions may join.
    private_to: Option<[Sid; 2]>,
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

    pub(crate) fn exists(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn create(&mut self, name: &str, private_to: Option<[Sid; 2]>) -> RoomId {
        self.next += 1;
        let id = RoomId(self.next);
        self.by_id.insert(
            id,
            Room {
                name: name.into(),
                members: Vec::new(),
                private_to,
            },
        );
        self.by_name.insert(name.into(), id);
        id
    }

    /// Reserves a call's room for exactly two sessions; they join it next.
    pub(crate) fn create_private(&mut self, name: &str, members: [Sid; 2]) -> RoomId {
        self.create(name, Some(members))
    }

    /// Adds `sid` to the room `name`, making the room if needed. The caller
    /// has checked that `sid` is not in it yet.
    pub(crate) fn join(
        &mut self,
        name: &str,
        sid: Sid,
        meta: Option<Box<RawValue>>,
        max_peers: usize,
    ) -> Result<RoomId, Refused> {
        let id = match self.find(name) {
            Some(id) => id,
            None => self.create(name, None),
        };
        let Some(room) = self.by_id.get_mut(&id) else {
            return Err(Refused::Private);
        };
        if room.private_to.is_some_and(|p| !p.contains(&sid)) {
            return Err(Refused::Private);
        }
        if max_peers != 0 && room.members.len() >= max_peers {
            return Err(Refused::Full);
        }
        room.members.push(Member { sid, meta });
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
        room.members.remove(pos);
        if room.members.is_empty()
            && let Some(room) = self.by_id.remove(&id)
        {
            self.by_name.remove(&room.name);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_live_while_they_have_members() {
        let mut r = Rooms::default();
        let a = r.join("x", Sid(1), None, 2).expect("join");
        assert_eq!(r.join("x", Sid(2), None, 2), Ok(a));
        assert_eq!(r.join("x", Sid(3), None, 2), Err(Refused::Full));
        assert!(r.leave(a, Sid(1)));
        assert!(!r.leave(a, Sid(1)));
        assert_eq!(r.len(), 1);
        assert!(r.leave(a, Sid(2)));
        assert_eq!(r.len(), 0);
        assert!(r.find("x").is_none());
        let p = r.create_private("call", [Sid(1), Sid(2)]);
        assert_eq!(r.join("call", Sid(3), None, 0), Err(Refused::Private));
        assert_eq!(r.join("call", Sid(2), None, 0), Ok(p));
        assert_eq!(r.name(p), "call");
    }
}
