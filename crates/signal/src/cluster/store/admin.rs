//! The store's side of the admin API: room views and kicks, for every
//! node (see `Command::Rooms`, `Command::Room` and `Command::Kick`).

use std::time::Instant;

use super::Store;
use crate::cluster::{MemberInfo, NodeId, Push, ReqId, RoomInfo, RoomMembers, Text};

/// Milliseconds from `then` to `now`: what a push says of a time, so that
/// the nodes' clocks need not agree with the store's.
fn age_ms(now: Instant, then: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(then).as_millis()).unwrap_or(u64::MAX)
}

impl Store {
    /// Every room, by name.
    pub(super) fn room_list(&self, now: Instant) -> Vec<RoomInfo> {
        let mut rooms: Vec<RoomInfo> = self
            .rooms
            .iter()
            .map(|(name, r)| RoomInfo {
                room: name.clone(),
                peers: r.members.len() as u64,
                age_ms: age_ms(now, r.created),
                media: r.media,
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        rooms
    }

    pub(super) fn room_members(&self, now: Instant, name: &str) -> Option<RoomMembers> {
        let r = self.rooms.get(name)?;
        let members = r
            .members
            .iter()
            .filter_map(|m| {
                let s = self.sessions.get(&m.session)?;
                Some(MemberInfo {
                    peer: m.peer.clone(),
                    user: s.user.clone(),
                    meta: m.meta.clone(),
                    node: s.owner.clone(),
                    age_ms: age_ms(now, m.joined),
                })
            })
            .collect();
        Some(RoomMembers {
            age_ms: age_ms(now, r.created),
            media: r.media,
            members,
        })
    }

    /// The admin API's kick: each live member's node is told to kick it
    /// (it leaves as for a `leave`, so the others hear `bye` through the
    /// store as usual); a member whose node is dead is unseated here.
    pub(super) fn kick(&mut self, from: &NodeId, req: ReqId, name: &Text, peer: Option<&Text>) {
        let Some(r) = self.rooms.get(name) else {
            self.push(from, Push::Kicked { req, kicked: None });
            return;
        };
        let mut by_node: Vec<(NodeId, Vec<Text>)> = Vec::new();
        let mut orphans: Vec<(NodeId, Text)> = Vec::new();
        for m in &r.members {
            if peer.is_some_and(|p| p != &m.peer) {
                continue;
            }
            let Some(s) = self.sessions.get(&m.session) else {
                continue;
            };
            if !self.is_alive(&s.owner) {
                orphans.push((s.owner.clone(), m.session.clone()));
                continue;
            }
            match by_node.iter_mut().find(|(n, _)| n == &s.owner) {
                Some((_, list)) => list.push(m.session.clone()),
                None => by_node.push((s.owner.clone(), vec![m.session.clone()])),
            }
        }
        let kicked = orphans.len() + by_node.iter().map(|(_, l)| l.len()).sum::<usize>();
        for (owner, session) in orphans {
            self.unseat(&owner, &session, name);
        }
        for (node, sessions) in by_node {
            self.out.push_back((
                node,
                Push::Kick {
                    room: name.clone(),
                    sessions,
                },
            ));
        }
        self.push(
            from,
            Push::Kicked {
                req,
                kicked: Some(kicked as u64),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use switchboard_signal_proto::MediaKind;

    use super::super::tests::{join, rec};
    use super::super::{Store, StoreConfig};
    use crate::cluster::{Command, MemberInfo, NodeId, Push, RoomEvent, RoomInfo, RoomMembers};

    #[test]
    fn admin_views_and_kicks_reach_every_node_and_spare_the_dead() {
        let t = Instant::now();
        let (a, b) = (NodeId::new("a"), NodeId::new("b"));
        let mut st = Store::new(StoreConfig::default());
        st.handle(t, &a, Command::Register(rec("s1", "p1")));
        st.handle(t, &b, Command::Register(rec("s2", "p2")));
        st.handle(t, &b, Command::Register(rec("s3", "p3")));
        st.handle(t, &a, join(1, "s1", "r", 0));
        let later = t + Duration::from_millis(1500);
        st.handle(later, &b, join(2, "s2", "r", 0));
        st.handle(later, &b, join(3, "s3", "r", 0));
        while st.poll().is_some() {}

        let now = t + Duration::from_secs(2);
        st.handle(now, &a, Command::Rooms { req: 4 });
        st.handle(
            now,
            &a,
            Command::Room {
                req: 5,
                room: "r".into(),
            },
        );
        st.handle(
            now,
            &a,
            Command::Room {
                req: 6,
                room: "x".into(),
            },
        );
        let got: Vec<_> = std::iter::from_fn(|| st.poll()).collect();
        let rooms = vec![RoomInfo {
            room: "r".into(),
            peers: 3,
            age_ms: 2000,
            media: MediaKind::Mesh,
        }];
        assert_eq!(got[0], (a.clone(), Push::Rooms { req: 4, rooms }));
        let member = |peer: &str, node: &NodeId, age_ms| MemberInfo {
            peer: peer.into(),
            user: None,
            meta: None,
            node: node.clone(),
            age_ms,
        };
        let members = vec![
            member("p1", &a, 2000),
            member("p2", &b, 500),
            member("p3", &b, 500),
        ];
        assert_eq!(
            got[1],
            (
                a.clone(),
                Push::Room {
                    req: 5,
                    room: Some(RoomMembers {
                        age_ms: 2000,
                        media: MediaKind::Mesh,
                        members
                    })
                }
            )
        );
        assert_eq!(got[2], (a.clone(), Push::Room { req: 6, room: None }));

        // A kick of a peer on b: b is told, and does the leaving.
        let kick = |req, peer: Option<&str>| Command::Kick {
            req,
            room: "r".into(),
            peer: peer.map(Into::into),
        };
        st.handle(now, &a, kick(7, Some("p2")));
        st.handle(now, &a, kick(8, Some("nobody")));
        st.handle(
            now,
            &a,
            Command::Kick {
                req: 9,
                room: "x".into(),
                peer: None,
            },
        );
        let got: Vec<_> = std::iter::from_fn(|| st.poll()).collect();
        let told = Push::Kick {
            room: "r".into(),
            sessions: vec!["s2".into()],
        };
        assert_eq!(
            got,
            [
                (b.clone(), told),
                (
                    a.clone(),
                    Push::Kicked {
                        req: 7,
                        kicked: Some(1)
                    }
                ),
                (
                    a.clone(),
                    Push::Kicked {
                        req: 8,
                        kicked: Some(0)
                    }
                ),
                (
                    a.clone(),
                    Push::Kicked {
                        req: 9,
                        kicked: None
                    }
                ),
            ]
        );
        assert_eq!(st.members("r").len(), 3, "the seat goes with b's leave");

        // b dies: closing the room unseats its members here, `bye` to a.
        let dead = now + Duration::from_secs(10);
        st.handle(dead, &a, Command::Heartbeat);
        st.handle_timeout(dead);
        while st.poll().is_some() {}
        st.handle(dead, &a, kick(10, None));
        let got: Vec<_> = std::iter::from_fn(|| st.poll()).collect();
        let bye = |peer: &str| Push::Deliver {
            from: b.clone(),
            req: None,
            room: "r".into(),
            event: RoomEvent::Bye { peer: peer.into() },
            sessions: vec!["s1".into()],
        };
        let told = Push::Kick {
            room: "r".into(),
            sessions: vec!["s1".into()],
        };
        assert_eq!(
            got,
            [
                (a.clone(), bye("p2")),
                (a.clone(), bye("p3")),
                (a.clone(), told),
                (
                    a.clone(),
                    Push::Kicked {
                        req: 10,
                        kicked: Some(3)
                    }
                ),
            ]
        );
        assert_eq!(st.members("r").len(), 1, "only a's seat waits for a");
    }
}
