//! From the signaling core's lifecycle events to webhook events.
//!
//! The core says who joined and left; a receiver also wants to know when a
//! room starts and finishes, which user a peer is, and when an answered
//! call is over. That takes a little state, kept here (in the router task,
//! off the hub's lock). `room_started`/`room_finished` follow this node's
//! own peers: on one node that is the room's life; in a cluster, each node
//! reports the span it served the room.

use std::collections::HashMap;

use switchboard_signal::Event;

use super::HookEvent;

/// Whether `event` can give a webhook event (the rest is not queued).
pub(super) fn is_relevant(event: &Event) -> bool {
    matches!(
        event,
        Event::SessionStarted { .. }
            | Event::SessionEnded { .. }
            | Event::Joined { .. }
            | Event::Left { .. }
            | Event::CallStarted { .. }
            | Event::CallAccepted { .. }
            | Event::CallEnded { .. }
    )
}

#[derive(Debug, Default)]
pub(super) struct Translator {
    /// Peers of each room on this node.
    rooms: HashMap<String, usize>,
    /// Peer id to user id, for the sessions that have one.
    users: HashMap<String, String>,
    /// An answered call's room, to its call id.
    call_rooms: HashMap<String, String>,
}

impl Translator {
    /// Appends what `event` means to a receiver to `out`.
    pub(super) fn signal(&mut self, event: &Event, out: &mut Vec<HookEvent>) {
        match event {
            Event::SessionStarted {
                peer,
                user: Some(user),
                ..
            } => {
                self.users.insert(peer.clone(), user.clone());
            }
            Event::SessionEnded { peer, .. } => {
                self.users.remove(peer);
            }
            Event::Joined { peer, room, peers } => {
                let here = self.rooms.entry(room.clone()).or_default();
                *here += 1;
                if *here == 1 {
                    out.push(HookEvent::RoomStarted { room: room.clone() });
                }
                out.push(HookEvent::PeerJoined {
                    room: room.clone(),
                    peer: peer.clone(),
                    user: self.users.get(peer).cloned(),
                    peers: *peers,
                });
            }
            Event::Left {
                peer,
                room,
                peers,
                reason,
            } => {
                out.push(HookEvent::PeerLeft {
                    room: room.clone(),
                    peer: peer.clone(),
                    user: self.users.get(peer).cloned(),
                    peers: *peers,
                    reason: reason.as_str().to_owned(),
                });
                let here = self.rooms.get_mut(room).map(|n| {
                    *n = n.saturating_sub(1);
                    *n
                });
                // The core's count wins when the two disagree (an event
                // dropped by its bounded queue): the room is gone at 0.
                if *peers == 0 || here.unwrap_or(0) == 0 {
                    if self.rooms.remove(room).is_some() {
                        out.push(HookEvent::RoomFinished { room: room.clone() });
                    }
                    if let Some(call) = self.call_rooms.remove(room) {
                        out.push(HookEvent::CallEnded {
                            call,
                            reason: "finished".to_owned(),
                            room: Some(room.clone()),
                        });
                    }
                }
            }
            Event::CallStarted {
                call,
                caller,
                callee,
                ..
            } => out.push(HookEvent::CallStarted {
                call: call.clone(),
                peer: caller.clone(),
                user: self.users.get(caller).cloned(),
                callee: callee.clone(),
            }),
            Event::CallAccepted { call, room } => {
                self.call_rooms.insert(room.clone(), call.clone());
            }
            Event::CallEnded { call, reason } => out.push(HookEvent::CallEnded {
                call: call.clone(),
                reason: reason.as_str().to_owned(),
                room: None,
            }),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_signal::{CallEndReason, ConnId, EndReason, Face, LeaveReason};

    use super::*;

    fn names(t: &mut Translator, events: &[Event]) -> Vec<String> {
        let mut out = Vec::new();
        for e in events {
            t.signal(e, &mut out);
        }
        out.iter()
            .map(|e| {
                let v = serde_json::to_value(e).expect("serializes");
                format!(
                    "{}:{}",
                    v["event"].as_str().unwrap_or(""),
                    v.get("peer")
                        .or(v.get("call"))
                        .and_then(|p| p.as_str())
                        .unwrap_or("")
                )
            })
            .collect()
    }

    fn joined(peer: &str, peers: usize) -> Event {
        Event::Joined {
            peer: peer.into(),
            room: "r".into(),
            peers,
        }
    }

    fn left(peer: &str, peers: usize) -> Event {
        Event::Left {
            peer: peer.into(),
            room: "r".into(),
            peers,
            reason: LeaveReason::SessionEnded(EndReason::Closed),
        }
    }

    #[test]
    fn a_room_starts_with_its_first_peer_and_finishes_with_its_last() {
        let mut t = Translator::default();
        let got = names(
            &mut t,
            &[
                Event::SessionStarted {
                    conn: ConnId(1),
                    session: "s".into(),
                    peer: "a".into(),
                    user: Some("alice".into()),
                    face: Face::Native,
                },
                joined("a", 1),
                joined("b", 2),
                left("a", 1),
                left("b", 0),
                joined("c", 1),
            ],
        );
        assert_eq!(
            got,
            [
                "room_started:",
                "peer_joined:a",
                "peer_joined:b",
                "peer_left:a",
                "peer_left:b",
                "room_finished:",
                "room_started:",
                "peer_joined:c",
            ]
        );
        let mut out = Vec::new();
        t.signal(&joined("a", 2), &mut out);
        assert!(
            matches!(&out[0], HookEvent::PeerJoined { user: Some(u), .. } if u == "alice"),
            "{out:?}"
        );
    }

    #[test]
    fn an_answered_call_ends_with_its_room() {
        let mut t = Translator::default();
        let room = |peer: &str, peers| Event::Left {
            peer: peer.into(),
            room: "call-room".into(),
            peers,
            reason: LeaveReason::Requested,
        };
        let got = names(
            &mut t,
            &[
                Event::CallStarted {
                    call: "c1".into(),
                    caller: "a".into(),
                    callee: "bob".into(),
                    rung: 1,
                },
                Event::CallAccepted {
                    call: "c1".into(),
                    room: "call-room".into(),
                },
                Event::Joined {
                    peer: "a".into(),
                    room: "call-room".into(),
                    peers: 1,
                },
                room("a", 0),
                Event::CallEnded {
                    call: "c2".into(),
                    reason: CallEndReason::NoAnswer,
                },
            ],
        );
        assert_eq!(
            got,
            [
                "call_started:a",
                "room_started:",
                "peer_joined:a",
                "peer_left:a",
                "room_finished:",
                "call_ended:c1",
                "call_ended:c2",
            ]
        );
    }
}
