//! Direct calls across nodes (PROTOCOL.md §3 and §6). The caller's node
//! decides: it rings through the store, and every accept or decline goes
//! to it, so "exactly one accept wins" is one node's serial decision. The
//! callee's nodes keep a [`RemoteRing`] for the sessions they rang and
//! carry out what the caller's node says.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use switchboard_signal_proto::{CallEndReason, ErrorCode, RequestId};

use crate::calls::Call;
use crate::cluster::{Command, NodeId, NodeMsg, ReqId, Text};
use crate::clustered::{Gather, Pending, Reply, unavailable};
use crate::idmap::IdMap;
use crate::presence::JoinKind;
use crate::session::Sid;
use crate::wire::{self, Body};
use crate::{Event, Face, Refusal, SignalCore, Timer};

/// How long a rung node keeps a ring after its timeout when the caller's
/// node never says how it ended (it died): then the ring is dropped.
const RING_SLACK: Duration = Duration::from_secs(5);

/// What a callee's session asked of the caller's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallOp {
    Accept,
    Decline,
}

/// A call ringing sessions of this node for a caller elsewhere (or here:
/// the caller's own node rings its sessions the same way).
#[derive(Debug)]
pub(crate) struct RemoteRing {
    call: Text,
    caller_node: NodeId,
    rung: Vec<Sid>,
    deadline: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct RemoteRings {
    by_key: IdMap<u64, RemoteRing>,
    by_call: HashMap<Text, u64>,
    next: u64,
}

impl RemoteRings {
    fn insert(&mut self, ring: RemoteRing) -> u64 {
        self.next += 1;
        self.by_call.insert(ring.call.clone(), self.next);
        self.by_key.insert(self.next, ring);
        self.next
    }

    fn find(&self, call: &str) -> Option<(u64, &RemoteRing)> {
        let key = *self.by_call.get(call)?;
        Some((key, self.by_key.get(&key)?))
    }

    fn remove(&mut self, key: u64) -> Option<RemoteRing> {
        let ring = self.by_key.remove(&key)?;
        self.by_call.remove(&ring.call);
        Some(ring)
    }

    fn keys(&self) -> Vec<u64> {
        let mut keys: Vec<u64> = self.by_key.keys().copied().collect();
        keys.sort_unstable();
        keys
    }
}

fn no_such_call() -> Refusal {
    Refusal::new(ErrorCode::NoSuchCall, "no such ringing call for you")
}

impl SignalCore {
    fn tell(&mut self, to: NodeId, msg: NodeMsg) {
        self.command(Command::Tell { to, msg });
    }

    /// The caller's side of `call` in a cluster: the store rings the
    /// callee's sessions on every node; `ringing` (or `no_such_user`) waits
    /// for their counts.
    pub(crate) fn cluster_call(
        &mut self,
        now: Instant,
        sid: Sid,
        to: &str,
        meta: Option<&RawValue>,
        reply_to: Option<&RequestId>,
    ) -> Result<(), Refusal> {
        if self.cluster_down() {
            return Err(unavailable());
        }
        let s = self
            .sessions
            .get(&sid)
            .ok_or_else(crate::presence::no_session)?;
        let (from, except) = (s.user.clone(), s.id.clone());
        let id = loop {
            let id = self.random_id(16);
            if self.calls.find(&id).is_none() {
                break id;
            }
        };
        let body = Body::new("incoming_call")
            .str("call", &id)
            .opt_str("from", from.as_deref())
            .meta("meta", meta)
            .finish();
        let key = self.new_cluster_call(now, sid, &id, to, meta);
        let req = self.cluster.as_mut().map_or(0, |c| c.req());
        self.command(Command::Ring {
            req,
            call: id.as_str().into(),
            user: to.into(),
            except,
            body,
        });
        if let Some(c) = &mut self.cluster {
            c.pending.insert(
                req,
                Pending::Gather(Gather {
                    sid,
                    reply: Reply::Native(reply_to.cloned()),
                    to: false,
                    counted: 0,
                    waiting: Vec::new(),
                    answered: false,
                    refused: 0,
                    call: Some(key),
                    per_node: Vec::new(),
                }),
            );
        }
        Ok(())
    }

    /// Every node has said how many it rang.
    pub(crate) fn ring_gathered(&mut self, _now: Instant, key: u64, g: &Gather, total: u64) {
        let Some(call) = self.calls.get_mut(key) else {
            // Answered, declined or cancelled before every count was in.
            return;
        };
        let reply_to = match &g.reply {
            Reply::Native(id) => id.clone(),
            Reply::Classic(_) => None,
        };
        if total == 0 {
            self.finish_call(key);
            let e = Refusal::new(ErrorCode::NoSuchUser, "that user has no connection");
            self.refuse(g.sid, &g.reply, &e);
            return;
        }
        call.nodes = g
            .per_node
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(node, _)| node.clone())
            .collect();
        call.confirmed = true;
        let id = call.id.to_string();
        let callee = call.callee_user.to_string();
        self.counters.calls += 1;
        self.events.push(Event::CallStarted {
            call: id.clone(),
            caller: self
                .sessions
                .get(&g.sid)
                .map_or_else(String::new, |s| s.peer.to_string()),
            callee,
            rung: usize::try_from(total).unwrap_or(usize::MAX),
        });
        self.send(
            g.sid,
            Body::new("ringing")
                .str("call", &id)
                .reply_to(reply_to.as_ref())
                .finish(),
        );
    }

    /// A ring for sessions of this node: `incoming_call` to each, and the
    /// count to the caller's node.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rung_here(
        &mut self,
        now: Instant,
        from: NodeId,
        req: ReqId,
        call: Text,
        user: &str,
        except: &str,
        body: bytes::Bytes,
    ) {
        let rung: Vec<Sid> = self
            .by_user
            .get(user)
            .map(|list| {
                list.iter()
                    .copied()
                    .filter(|x| {
                        self.sessions
                            .get(x)
                            .is_some_and(|s| s.face == Face::Native && &*s.id != except)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut sessions = Vec::with_capacity(rung.len());
        for &r in &rung {
            self.send(r, body.clone());
            if let Some(s) = self.sessions.get(&r) {
                sessions.push((s.id.clone(), s.epoch));
            }
        }
        if !rung.is_empty() {
            let deadline = now + self.config.ring_timeout + RING_SLACK;
            if let Some(c) = &mut self.cluster {
                let key = c.rings.insert(RemoteRing {
                    call,
                    caller_node: from.clone(),
                    rung,
                    deadline,
                });
                self.timers.insert((deadline, Timer::RemoteRing(key)));
            }
        }
        self.command(Command::Report {
            to: from,
            req,
            sessions,
            classic: 0,
        });
    }

    /// A callee's `accept` or `decline` in a cluster: the caller's node
    /// decides, and answers [`NodeMsg::Won`], [`NodeMsg::Lost`] or
    /// [`NodeMsg::Ended`].
    pub(crate) fn cluster_answer(
        &mut self,
        sid: Sid,
        call: &str,
        op: CallOp,
        reply_to: Option<&RequestId>,
    ) -> Result<(), Refusal> {
        let (key, caller_node) = {
            let c = self.cluster.as_ref().ok_or_else(no_such_call)?;
            let (key, ring) = c.rings.find(call).ok_or_else(no_such_call)?;
            if !ring.rung.contains(&sid) {
                return Err(no_such_call());
            }
            let call: Text = call.into();
            if c.ops.contains_key(&(call, sid)) {
                return Err(no_such_call());
            }
            (key, ring.caller_node.clone())
        };
        let _ = key;
        if self.cluster_down() {
            return Err(unavailable());
        }
        let s = self
            .sessions
            .get(&sid)
            .ok_or_else(crate::presence::no_session)?;
        let (session, peer) = (s.id.clone(), s.peer.clone());
        let call: Text = call.into();
        let msg = match op {
            CallOp::Accept => NodeMsg::Accept {
                call: call.clone(),
                session,
                peer,
            },
            CallOp::Decline => NodeMsg::Decline {
                call: call.clone(),
                session,
            },
        };
        self.tell(caller_node.clone(), msg);
        if let Some(c) = &mut self.cluster {
            c.ops
                .insert((call, sid), (op, caller_node, reply_to.cloned()));
        }
        Ok(())
    }

    /// What another node said about a call.
    pub(crate) fn told(&mut self, now: Instant, from: NodeId, msg: NodeMsg) {
        match msg {
            NodeMsg::Accept {
                call,
                session,
                peer,
            } => self.told_accept(from, &call, session, peer),
            NodeMsg::Decline { call, session } => {
                let Some((key, _)) = self.calls.find(&call) else {
                    self.tell(from, NodeMsg::Lost { call, session });
                    return;
                };
                let Some(c) = self.finish_call(key) else {
                    return;
                };
                self.send(c.caller, Body::new("declined").str("call", &c.id).finish());
                self.events.push(Event::CallEnded {
                    call: c.id.to_string(),
                    reason: CallEndReason::Declined,
                });
                let mut nodes = c.nodes.clone();
                if !nodes.contains(&from) {
                    nodes.push(from);
                }
                for n in nodes {
                    self.tell(
                        n,
                        NodeMsg::Ended {
                            call: call.clone(),
                            reason: CallEndReason::Declined,
                            except: Some(session.clone()),
                        },
                    );
                }
            }
            NodeMsg::Won {
                call,
                session,
                room,
                caller,
            } => {
                let Some(&sid) = self.by_session_id.get(&session) else {
                    return;
                };
                let reply_to = self
                    .cluster
                    .as_mut()
                    .and_then(|c| c.ops.remove(&(call.clone(), sid)))
                    .and_then(|(_, _, r)| r);
                self.ring_over(&call, CallEndReason::AnsweredElsewhere, Some(sid));
                let Some(me) = self.sessions.get(&sid).map(|s| s.peer.clone()) else {
                    return;
                };
                let reply = Reply::Native(reply_to);
                if let Err(e) = self.cluster_join(
                    sid,
                    &room,
                    None,
                    JoinKind::Call,
                    Some([caller, me]),
                    reply.clone(),
                ) {
                    self.refuse(sid, &reply, &e);
                }
            }
            NodeMsg::Lost { call, session } => {
                let Some(&sid) = self.by_session_id.get(&session) else {
                    return;
                };
                if let Some((_, _, reply_to)) = self
                    .cluster
                    .as_mut()
                    .and_then(|c| c.ops.remove(&(call, sid)))
                {
                    self.refuse(sid, &Reply::Native(reply_to), &no_such_call());
                }
            }
            NodeMsg::Ended {
                call,
                reason,
                except,
            } => {
                let except = except.and_then(|s| self.by_session_id.get(&s).copied());
                if let Some(sid) = except
                    && let Some(c) = &mut self.cluster
                {
                    // A decline that went through: nothing to answer.
                    c.ops.remove(&(call.clone(), sid));
                }
                self.ring_over(&call, reason, except);
            }
            NodeMsg::Media { room, peer, what } => {
                self.media_told(now, from, room, peer, what);
            }
            NodeMsg::RingGone { call } => {
                let Some((key, _)) = self.calls.find(&call) else {
                    return;
                };
                let Some(c) = self.calls.get_mut(key) else {
                    return;
                };
                c.nodes.retain(|n| *n != from);
                if c.confirmed && c.nodes.is_empty() {
                    self.callee_all_gone(key);
                }
            }
        }
    }

    fn told_accept(&mut self, from: NodeId, call: &Text, session: Text, peer: Text) {
        let Some((key, _)) = self.calls.find(call) else {
            self.tell(
                from,
                NodeMsg::Lost {
                    call: call.clone(),
                    session,
                },
            );
            return;
        };
        let Some(c) = self.finish_call(key) else {
            return;
        };
        let room = loop {
            let name = format!("call-{}", self.random_id(16));
            if !self.rooms.exists(&name) {
                break name;
            }
        };
        self.events.push(Event::CallAccepted {
            call: c.id.to_string(),
            room: room.clone(),
        });
        self.send(
            c.caller,
            Body::new("accepted")
                .str("call", &c.id)
                .str("room", &room)
                .finish(),
        );
        let room: Text = room.into();
        if let Some(me) = self.sessions.get(&c.caller).map(|s| s.peer.clone()) {
            let _ = self.cluster_join(
                c.caller,
                &room,
                c.meta.as_deref(),
                JoinKind::Call,
                Some([me.clone(), peer]),
                Reply::Native(None),
            );
            self.tell(
                from.clone(),
                NodeMsg::Won {
                    call: call.clone(),
                    session,
                    room,
                    caller: me,
                },
            );
        }
        for n in c.nodes.iter().filter(|n| **n != from) {
            self.tell(
                n.clone(),
                NodeMsg::Ended {
                    call: call.clone(),
                    reason: CallEndReason::AnsweredElsewhere,
                    except: None,
                },
            );
        }
    }

    /// Every session rung for a confirmed call is gone: the caller hears
    /// `gone`.
    fn callee_all_gone(&mut self, key: u64) {
        if let Some(c) = self.finish_call(key) {
            self.events.push(Event::CallEnded {
                call: c.id.to_string(),
                reason: CallEndReason::Gone,
            });
            self.send(c.caller, wire::call_ended(&c.id, CallEndReason::Gone));
        }
    }

    /// The ring of `call` on this node ends: `call_ended` to the sessions
    /// it rang (but `except`).
    fn ring_over(&mut self, call: &str, reason: CallEndReason, except: Option<Sid>) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let Some((key, _)) = c.rings.find(call) else {
            return;
        };
        let Some(ring) = c.rings.remove(key) else {
            return;
        };
        self.timers.remove(&(ring.deadline, Timer::RemoteRing(key)));
        let body = wire::call_ended(call, reason);
        for r in ring.rung {
            if Some(r) != except {
                self.send(r, body.clone());
            }
        }
    }

    /// The caller's node ends a call it rang elsewhere (`cancel`, no answer,
    /// the caller gone): every node that rang hears it.
    pub(crate) fn tell_ring_nodes(
        &mut self,
        call: &Call,
        reason: CallEndReason,
        except: Option<Text>,
    ) {
        if self.cluster.is_none() || call.nodes.is_empty() {
            return;
        }
        for n in call.nodes.clone() {
            self.tell(
                n,
                NodeMsg::Ended {
                    call: (*call.id).into(),
                    reason,
                    except: except.clone(),
                },
            );
        }
    }

    /// A session of this node ended or moved: the rings it was in forget
    /// it, and a caller's node whose ring here is left with nobody hears
    /// so.
    pub(crate) fn rings_party_gone(&mut self, sid: Sid) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        c.ops.retain(|(_, s), _| *s != sid);
        let mut empty = Vec::new();
        for key in c.rings.keys() {
            if let Some(ring) = c.rings.by_key.get_mut(&key)
                && ring.rung.contains(&sid)
            {
                ring.rung.retain(|&r| r != sid);
                if ring.rung.is_empty() {
                    empty.push(key);
                }
            }
        }
        let mut gone = Vec::new();
        for key in empty {
            if let Some(ring) = c.rings.remove(key) {
                self.timers.remove(&(ring.deadline, Timer::RemoteRing(key)));
                gone.push((ring.caller_node, ring.call));
            }
        }
        for (node, call) in gone {
            if self.cluster_down() {
                continue;
            }
            self.tell(node, NodeMsg::RingGone { call });
        }
    }

    /// `node` died: its callers' rings here end with `gone`, its rings of
    /// this node's calls are forgotten, and accepts it was asked get
    /// `no_such_call`.
    pub(crate) fn calls_node_died(&mut self, node: &NodeId) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let dead_rings: Vec<Text> = c
            .rings
            .keys()
            .into_iter()
            .filter_map(|k| c.rings.by_key.get(&k))
            .filter(|r| &r.caller_node == node)
            .map(|r| r.call.clone())
            .collect();
        let mut ops: Vec<(Sid, Option<RequestId>)> = Vec::new();
        c.ops.retain(|(_, sid), (_, n, reply_to)| {
            if n == node {
                ops.push((*sid, reply_to.clone()));
                false
            } else {
                true
            }
        });
        for call in dead_rings {
            self.ring_over(&call, CallEndReason::Gone, None);
        }
        for (sid, reply_to) in ops {
            self.refuse(sid, &Reply::Native(reply_to), &no_such_call());
        }
        for key in self.calls.keys() {
            let Some(c) = self.calls.get_mut(key) else {
                continue;
            };
            if c.nodes.contains(node) {
                c.nodes.retain(|n| n != node);
                if c.confirmed && c.nodes.is_empty() {
                    self.callee_all_gone(key);
                }
            }
        }
    }

    /// A ring whose caller's node never said how it ended.
    pub(crate) fn remote_ring_expired(&mut self, key: u64) {
        let call = self
            .cluster
            .as_ref()
            .and_then(|c| c.rings.by_key.get(&key))
            .map(|r| r.call.clone());
        if let Some(call) = call {
            self.ring_over(&call, CallEndReason::NoAnswer, None);
        }
    }
}
