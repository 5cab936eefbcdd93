//! Direct calls (PROTOCOL.md §3): ringing a user by id, and the private room
//! an accepted call becomes. A call exists only while it rings.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::value::RawValue;
use switchboard_signal_proto::{CallEndReason, ErrorCode, RequestId};

use crate::cluster::NodeId;
use crate::cluster_calls::CallOp;
use crate::clustered::Reply;
use crate::idmap::IdMap;
use crate::presence::{JoinKind, JoinOutcome};
use crate::session::Sid;
use crate::wire::{self, Body};
use crate::{Event, Refusal, SignalCore, Timer};

#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) id: Box<str>,
    pub(crate) caller: Sid,
    pub(crate) callee_user: Box<str>,
    /// The callee's sessions that got `incoming_call` and are still alive.
    rung: Vec<Sid>,
    pub(crate) meta: Option<Box<RawValue>>,
    deadline: Instant,
    /// In a cluster: the nodes where it rings (the rung sessions are
    /// theirs to know), and whether the ringing was confirmed (`ringing`
    /// sent).
    pub(crate) nodes: Vec<NodeId>,
    pub(crate) confirmed: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Calls {
    by_key: IdMap<u64, Call>,
    by_id: HashMap<Box<str>, u64>,
    next: u64,
}

impl Calls {
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    fn insert(&mut self, call: Call) -> u64 {
        self.next += 1;
        self.by_id.insert(call.id.clone(), self.next);
        self.by_key.insert(self.next, call);
        self.next
    }

    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut Call> {
        self.by_key.get_mut(&key)
    }

    pub(crate) fn keys(&self) -> Vec<u64> {
        let mut keys: Vec<u64> = self.by_key.keys().copied().collect();
        keys.sort_unstable();
        keys
    }

    pub(crate) fn find(&self, id: &str) -> Option<(u64, &Call)> {
        let key = *self.by_id.get(id)?;
        Some((key, self.by_key.get(&key)?))
    }

    fn remove(&mut self, key: u64) -> Option<Call> {
        let call = self.by_key.remove(&key)?;
        self.by_id.remove(&call.id);
        Some(call)
    }
}

fn no_such_call() -> Refusal {
    Refusal::new(ErrorCode::NoSuchCall, "no such ringing call for you")
}

impl SignalCore {
    pub(crate) fn call(
        &mut self,
        now: Instant,
        sid: Sid,
        to: &str,
        meta: Option<&RawValue>,
        reply_to: Option<&RequestId>,
    ) -> Result<(), Refusal> {
        crate::presence::check_meta(meta, self.config.max_meta_bytes)?;
        let cap = self.config.max_ringing_per_caller;
        if cap != 0 && self.ringing_from(sid) >= cap {
            // Transient, like a rate: the caller may call again once one of
            // its calls stops ringing.
            return Err(Refusal::new(
                ErrorCode::RateLimited,
                format!("too many ringing calls ({cap} at once)"),
            ));
        }
        if self.cluster.is_some() {
            return self.cluster_call(now, sid, to, meta, reply_to);
        }
        let rung: Vec<Sid> = self
            .by_user
            .get(to)
            .map(|list| list.iter().copied().filter(|&x| x != sid).collect())
            .unwrap_or_default();
        if rung.is_empty() {
            return Err(Refusal::new(
                ErrorCode::NoSuchUser,
                "that user has no connection",
            ));
        }
        let from = self
            .sessions
            .get(&sid)
            .ok_or_else(|| Refusal::new(ErrorCode::Internal, "session vanished"))?
            .user
            .clone();
        let id = loop {
            let id = self.random_id(16);
            if self.calls.find(&id).is_none() {
                break id;
            }
        };
        let deadline = now + self.config.ring_timeout;
        let incoming = Body::new("incoming_call")
            .str("call", &id)
            .opt_str("from", from.as_deref())
            .meta("meta", meta)
            .finish();
        let key = self.calls.insert(Call {
            id: id.as_str().into(),
            caller: sid,
            callee_user: to.into(),
            rung: rung.clone(),
            meta: meta.map(RawValue::to_owned),
            deadline,
            nodes: Vec::new(),
            confirmed: true,
        });
        self.timers.insert((deadline, Timer::Ring(key)));
        self.counters.calls += 1;
        self.events.push(Event::CallStarted {
            call: id.clone(),
            caller: self
                .sessions
                .get(&sid)
                .map_or_else(String::new, |s| s.peer.to_string()),
            callee: to.to_owned(),
            rung: rung.len(),
        });
        for &party in rung.iter().chain(std::iter::once(&sid)) {
            if let Some(s) = self.sessions.get_mut(&party) {
                s.calls.push(key);
            }
        }
        self.send(
            sid,
            Body::new("ringing")
                .str("call", &id)
                .reply_to(reply_to)
                .finish(),
        );
        for r in rung {
            self.send(r, incoming.clone());
        }
        Ok(())
    }

    /// A caller-side call for a clustered core, ringing from `now`.
    pub(crate) fn new_cluster_call(
        &mut self,
        now: Instant,
        sid: Sid,
        id: &str,
        to: &str,
        meta: Option<&RawValue>,
    ) -> u64 {
        let deadline = now + self.config.ring_timeout;
        let key = self.calls.insert(Call {
            id: id.into(),
            caller: sid,
            callee_user: to.into(),
            rung: Vec::new(),
            meta: meta.map(RawValue::to_owned),
            deadline,
            nodes: Vec::new(),
            confirmed: false,
        });
        self.timers.insert((deadline, Timer::Ring(key)));
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.calls.push(key);
        }
        key
    }

    /// How many calls `sid` placed that still ring.
    fn ringing_from(&self, sid: Sid) -> usize {
        self.sessions.get(&sid).map_or(0, |s| {
            s.calls
                .iter()
                .filter(|k| self.calls.by_key.get(k).is_some_and(|c| c.caller == sid))
                .count()
        })
    }

    /// The call, if `sid` is a session of its callee (not its caller).
    fn callee_call(&self, sid: Sid, id: &str) -> Result<u64, Refusal> {
        let (key, call) = self.calls.find(id).ok_or_else(no_such_call)?;
        let user = self.sessions.get(&sid).and_then(|s| s.user.as_deref());
        if call.caller == sid || user != Some(&*call.callee_user) {
            return Err(no_such_call());
        }
        Ok(key)
    }

    /// Stops the ringing: the call, its timer and every session's note of it.
    pub(crate) fn finish_call(&mut self, key: u64) -> Option<Call> {
        let call = self.calls.remove(key)?;
        self.timers.remove(&(call.deadline, Timer::Ring(key)));
        for party in call.rung.iter().chain(std::iter::once(&call.caller)) {
            if let Some(s) = self.sessions.get_mut(party) {
                s.calls.retain(|&k| k != key);
            }
        }
        Some(call)
    }

    pub(crate) fn end_for(
        &mut self,
        call: &Call,
        reason: CallEndReason,
        to: impl IntoIterator<Item = Sid>,
    ) {
        // In a cluster the rung sessions are the other nodes' to tell.
        self.tell_ring_nodes(call, reason, None);
        // For the others rung, an accept is `answered_elsewhere`; for the
        // call itself it is `CallAccepted`, already reported.
        if reason != CallEndReason::AnsweredElsewhere {
            self.events.push(Event::CallEnded {
                call: call.id.to_string(),
                reason,
            });
        }
        let body = wire::call_ended(&call.id, reason);
        for sid in to {
            self.send(sid, body.clone());
        }
    }

    pub(crate) fn accept(
        &mut self,
        now: Instant,
        sid: Sid,
        id: &str,
        reply_to: Option<&RequestId>,
    ) -> Result<(), Refusal> {
        if self.cluster.is_some() {
            return self.cluster_answer(sid, id, CallOp::Accept, reply_to);
        }
        let key = self.callee_call(sid, id)?;
        let call = self.finish_call(key).ok_or_else(no_such_call)?;
        let room = loop {
            let name = format!("call-{}", self.random_id(16));
            if !self.rooms.exists(&name) {
                break name;
            }
        };
        let rid = self.rooms.create_private(&room, [call.caller, sid], now);
        self.events.push(Event::CallAccepted {
            call: call.id.to_string(),
            room: room.clone(),
        });
        self.send(
            call.caller,
            Body::new("accepted")
                .str("call", &call.id)
                .str("room", &room)
                .finish(),
        );
        if let Ok(JoinOutcome::Joined(_)) = self.join(
            now,
            call.caller,
            &room,
            call.meta.as_deref(),
            None,
            JoinKind::Call,
            Reply::Native(None),
        ) {
            let body = self.joined_body(rid, call.caller, None);
            self.send(call.caller, body);
        }
        let joined = self.join(
            now,
            sid,
            &room,
            None,
            None,
            JoinKind::Call,
            Reply::Native(None),
        );
        if let Ok(JoinOutcome::Joined(_)) = joined {
            let body = self.joined_body(rid, sid, reply_to);
            self.send(sid, body);
        }
        let others: Vec<Sid> = call.rung.iter().copied().filter(|&r| r != sid).collect();
        self.end_for(&call, CallEndReason::AnsweredElsewhere, others);
        joined.map(|_| ())
    }

    pub(crate) fn decline(
        &mut self,
        sid: Sid,
        id: &str,
        reply_to: Option<&RequestId>,
    ) -> Result<(), Refusal> {
        if self.cluster.is_some() {
            return self.cluster_answer(sid, id, CallOp::Decline, reply_to);
        }
        let key = self.callee_call(sid, id)?;
        let call = self.finish_call(key).ok_or_else(no_such_call)?;
        self.send(
            call.caller,
            Body::new("declined").str("call", &call.id).finish(),
        );
        let others: Vec<Sid> = call.rung.iter().copied().filter(|&r| r != sid).collect();
        self.end_for(&call, CallEndReason::Declined, others);
        Ok(())
    }

    pub(crate) fn cancel(&mut self, sid: Sid, id: &str) -> Result<(), Refusal> {
        let (key, call) = self.calls.find(id).ok_or_else(no_such_call)?;
        if call.caller != sid {
            return Err(no_such_call());
        }
        let call = self.finish_call(key).ok_or_else(no_such_call)?;
        self.end_for(&call, CallEndReason::Cancelled, call.rung.clone());
        Ok(())
    }

    pub(crate) fn ring_timeout(&mut self, key: u64) {
        if let Some(call) = self.finish_call(key) {
            let everyone = call
                .rung
                .iter()
                .copied()
                .chain(std::iter::once(call.caller));
            let everyone: Vec<Sid> = everyone.collect();
            self.end_for(&call, CallEndReason::NoAnswer, everyone);
        }
    }

    /// `sid` ended for good while `key` rang: when the caller, or the last
    /// rung session of the callee, is gone, the other side hears `gone`.
    pub(crate) fn call_party_gone(&mut self, key: u64, sid: Sid) {
        let Some(call) = self.calls.by_key.get_mut(&key) else {
            return;
        };
        if call.caller != sid {
            call.rung.retain(|&r| r != sid);
            if !call.rung.is_empty() {
                return;
            }
        }
        if let Some(call) = self.finish_call(key) {
            let other_side: Vec<Sid> = if call.caller == sid {
                call.rung.clone()
            } else {
                vec![call.caller]
            };
            self.end_for(&call, CallEndReason::Gone, other_side);
        }
    }
}
