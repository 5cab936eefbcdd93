//! Sessions that move between nodes (PROTOCOL.md §6): a resume of a
//! session another node holds (a take), the sessions of a dead node (an
//! adoption), and a copy that is not this node's any more (forgotten, with
//! no `bye`: the session lives on elsewhere).
//!
//! The numbering of a session's frames must never fork: every frame a
//! client holds is in the store (see the gate in `outbox.rs`), except when
//! a node cut off from the store served its clients alone. A session that
//! moved without a connection (`SessionRecord::base`) numbers what it keeps
//! for now only, and a resume's `last_seq` places those frames after what
//! the client already has.

use std::sync::Arc;
use std::time::Instant;

use switchboard_signal_proto::MediaKind;

use crate::cluster::{Command, ReqId, SessionRecord, TakeOutcome};
use crate::clustered::Pending;
use crate::session::{ReplayBuffer, Session, Sid, TokenBucket};
use crate::{
    ConnId, EndReason, Event, Face, IceServer, Identity, ResumeFailReason, SignalCore, Timer, wire,
};

impl SignalCore {
    /// Whether a resume of `session` from `last_seq` must ask the store: a
    /// clustered core that can reach it and does not hold the session, or
    /// holds a copy that cannot serve `last_seq` (another node took the
    /// session and sent frames this copy lacks; the store has them).
    pub(crate) fn cluster_takes(&self, session: &str, last_seq: u64) -> bool {
        if !self.cluster.as_ref().is_some_and(|c| c.up) {
            return false;
        }
        let Some(&sid) = self.by_session_id.get(session) else {
            return true;
        };
        let Some(s) = self.sessions.get(&sid) else {
            return true;
        };
        // An adopted session's numbering follows the client's `last_seq`
        // here (see `resumes_here`); only a stale copy asks the store.
        let adopted = self
            .cluster
            .as_ref()
            .is_some_and(|c| c.bases.contains_key(&sid));
        s.face == Face::Native && !adopted && s.replay.after(last_seq, s.seq).is_none()
    }

    /// A resume here: its frames reach a live connection again, which the
    /// store must know (a later move renumbers only what no connection
    /// got). For a session that came without a connection, when the
    /// client's `last_seq` counts frames the node it came from sent but
    /// never wrote, the frames kept since follow them, here and in the
    /// store.
    pub(crate) fn resumes_here(&mut self, sid: Sid, last_seq: u64) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let base = c.bases.remove(&sid);
        let up = c.up;
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if let Some(base) = base
            && last_seq > base
        {
            // The replay numbers back from `seq`: the frames kept since
            // become `last_seq+1..`, and those before (at or below `base`,
            // which the client has) are dropped.
            s.seq += last_seq - base;
            s.replay.trim(last_seq, s.seq);
        }
        if up {
            // The replay waits for the store to know it (see `Gate`): were
            // this node to die first, the store would renumber frames the
            // client has.
            let (session, epoch, seq) = (s.id.clone(), s.epoch, s.seq);
            // The store clears the session's base with it.
            s.store_base = false;
            self.outbox.gated_command(
                sid,
                Command::Resumed {
                    session,
                    epoch,
                    last_seq,
                    seq,
                },
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn cluster_take(
        &mut self,
        conn: ConnId,
        session: &str,
        token: &str,
        last_seq: u64,
        identity: Identity,
        peer: Arc<str>,
        ice: Vec<IceServer>,
    ) {
        if let Some(&stale) = self.by_session_id.get(session) {
            // Another node took it and sent frames this copy lacks: the
            // store's is the one to resume, and this one must take no
            // frame meanwhile (the store would count what it cannot keep).
            self.forget(stale, crate::TAKEN_OVER, "taken over");
        }
        let req = self.next_req();
        self.command(Command::Take {
            req,
            session: session.into(),
            token: token.into(),
            last_seq,
        });
        if let Some(c) = &mut self.cluster {
            c.taking.insert(conn, req);
        }
        self.park(
            req,
            Pending::Take {
                conn,
                identity,
                peer,
                ice,
            },
        );
    }

    /// The connection of a pending take closed: the take goes on, and a
    /// session it brings waits in its grace period here.
    pub(crate) fn take_abandoned(&mut self, conn: ConnId) -> bool {
        let Some(c) = &mut self.cluster else {
            return false;
        };
        let Some(req) = c.taking.remove(&conn) else {
            return false;
        };
        if let Some(Pending::Take { conn: x, .. }) = c.pending.get_mut(&req) {
            // No connection will ever have this number.
            *x = ConnId(u64::MAX);
        }
        true
    }

    pub(crate) fn took(&mut self, now: Instant, req: ReqId, outcome: TakeOutcome) {
        let Some(Pending::Take {
            conn,
            identity,
            peer,
            ice,
        }) = self.cluster.as_mut().and_then(|c| c.pending.remove(&req))
        else {
            return;
        };
        let live = self
            .cluster
            .as_mut()
            .is_some_and(|c| c.taking.remove(&conn).is_some());
        match outcome {
            TakeOutcome::Taken(rec) => {
                let frames = rec.frames.clone();
                let sid = self.install(now, rec, live.then_some(conn), &identity);
                self.media_moved_here(sid, false);
                if !live {
                    return;
                }
                let Some(s) = self.sessions.get(&sid) else {
                    return;
                };
                self.outbox.unsequenced(conn, wire::resumed(&s.id, &s.peer));
                let (session, peer_id) = (s.id.to_string(), s.peer.to_string());
                let replayed = frames.len();
                for (seq, body) in frames {
                    self.outbox.replayed(conn, seq, body);
                }
                self.counters.resumes += 1;
                self.events.push(Event::SessionResumed {
                    conn,
                    session,
                    peer: peer_id,
                    replayed,
                });
            }
            TakeOutcome::Gap(rec) => {
                let sid = self.install(now, rec, None, &identity);
                self.media_moved_here(sid, false);
                self.end_session(sid, EndReason::StartedOver);
                if live {
                    self.start_over(
                        now,
                        conn,
                        ResumeFailReason::FramesLost,
                        identity,
                        peer,
                        &ice,
                    );
                }
            }
            TakeOutcome::Unknown => {
                if live {
                    self.start_over(now, conn, ResumeFailReason::Unknown, identity, peer, &ice);
                }
            }
        }
    }

    /// Makes a session the store gave this node a local one: connected on
    /// `conn`, or in its grace period from `now`.
    fn install(
        &mut self,
        now: Instant,
        rec: SessionRecord,
        conn: Option<ConnId>,
        identity: &Identity,
    ) -> Sid {
        if let Some(&old) = self.by_session_id.get(&rec.session) {
            // A stale copy (taken away and back): the store's is the truth.
            self.forget(old, crate::TAKEN_OVER, "taken over");
        }
        let rec_base = rec.base.unwrap_or(rec.seq);
        self.next_sid += 1;
        let sid = Sid(self.next_sid);
        let mut replay = ReplayBuffer::default();
        // The replay numbers frames back from `seq`: only a run that ends
        // there can be kept.
        if rec.frames.last().is_some_and(|(s, _)| *s == rec.seq) {
            for (_, body) in &rec.frames {
                replay.push(body, self.config.replay_frames, self.config.replay_bytes);
            }
        }
        let mut rooms = Vec::with_capacity(rec.rooms.len());
        for name in &rec.rooms {
            // The store said which are SFU rooms just before.
            let media = if self.moving_into_sfu(name) {
                MediaKind::Sfu
            } else {
                MediaKind::Mesh
            };
            if let Ok(rid) = self.rooms.join(name, sid, None, 0, 0, media, now) {
                rooms.push(rid);
            }
        }
        if rec.face == Face::Native
            && let Some(u) = &rec.user
        {
            self.by_user.entry(u.clone()).or_default().push(sid);
        }
        if let Some(conn) = conn {
            self.by_conn.insert(conn, sid);
        }
        self.by_session_id.insert(rec.session.clone(), sid);
        self.by_peer.insert(rec.peer.clone(), sid);
        let allowed_rooms = match conn {
            Some(_) => identity
                .rooms
                .as_ref()
                .map(|r| r.iter().map(|x| x.as_str().into()).collect()),
            // Adopted: no token at hand; it joins nothing until it resumes.
            None => Some(Box::default()),
        };
        self.sessions.insert(
            sid,
            Session {
                id: rec.session,
                resume_token: rec.token,
                peer: rec.peer,
                face: rec.face,
                conn,
                user: rec.user,
                ip: conn.and(identity.source_ip),
                allowed_rooms,
                seq: rec.seq,
                epoch: rec.epoch,
                store_base: rec.base.is_some(),
                replay,
                grace_until: None,
                bucket: TokenBucket::full(now, self.config.rate_burst),
                rooms,
                calls: Vec::new(),
            },
        );
        if conn.is_none()
            && let Some(s) = self.sessions.get_mut(&sid)
        {
            let until = now + self.config.resume_grace;
            s.grace_until = Some(until);
            self.timers.insert((until, Timer::Grace(sid)));
            if let Some(c) = &mut self.cluster {
                c.bases.insert(sid, rec_base);
            }
        }
        sid
    }

    pub(crate) fn adopt_one(&mut self, now: Instant, rec: SessionRecord) {
        let face = rec.face;
        let sid = self.install(now, rec, None, &Identity::default());
        // Its node died, and maybe its room's media node with it: its
        // media starts afresh on the room's media node now.
        self.media_moved_here(sid, face == Face::Native);
        if face == Face::Classic {
            // A Socket.IO session cannot resume: it ends with its node.
            self.end_session(sid, EndReason::Closed);
            return;
        }
        if let Some(s) = self.sessions.get(&sid) {
            self.events.push(Event::Suspended {
                conn: ConnId(u64::MAX),
                peer: s.peer.to_string(),
                until: now + self.config.resume_grace,
            });
        }
    }

    /// Drops a session without a word to its rooms: it lives on elsewhere.
    pub(crate) fn forget(&mut self, sid: Sid, code: u16, reason: &'static str) {
        self.media_moving_away(sid);
        let Some(s) = self.detach(sid) else {
            return;
        };
        if let Some(conn) = s.conn {
            self.outbox.purge(conn, code, reason);
        }
        for &rid in &s.rooms {
            self.rooms.leave(rid, sid);
        }
        for &key in &s.calls {
            self.call_party_gone(key, sid);
        }
        self.rings_party_gone(sid);
        let mut up = false;
        if let Some(c) = &mut self.cluster {
            c.unregistered.remove(&sid);
            c.bases.remove(&sid);
            c.classic_slots.remove(&sid);
            up = c.up;
        }
        if up && s.face == Face::Native {
            // Appends of this copy that reached the store after the move
            // went to a list nobody reads.
            self.command(Command::Drop {
                session: s.id.clone(),
                epoch: s.epoch,
            });
        }
    }
}
