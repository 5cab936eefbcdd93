//! The native face (PROTOCOL.md §1): text frames in, sequenced JSON out.

use std::time::Instant;

use bytes::Bytes;
use switchboard_signal_proto::{ErrorCode, RequestId};

use crate::clustered::Reply;
use crate::outbox::Data;
use crate::presence::{JoinKind, JoinOutcome};
use crate::session::Sid;
use crate::wire::{self, Req};
use crate::{Face, PendingAck, Refusal, SignalCore};

impl SignalCore {
    pub(crate) fn native_text(&mut self, now: Instant, sid: Sid, text: &str) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.face != Face::Native {
            return;
        }
        // The token is spent before anything else is looked at, and a
        // refused frame is not parsed: a client over its rate costs a
        // bounded scan for its `id`, never a parse of what it sent.
        let allowed = s
            .bucket
            .take(now, self.config.rate_per_sec, self.config.rate_burst);
        if !allowed {
            self.counters.error(ErrorCode::RateLimited);
            let body = match wire::scan_id(text) {
                Some(id) => wire::error(
                    ErrorCode::RateLimited,
                    "too many requests; slow down",
                    Some(&id),
                ),
                None => self.rate_limited.clone(),
            };
            self.outbox.frame(sid, s, body);
            return;
        }
        // Measured before parsing: an oversized frame costs no parse.
        if text.len() > self.config.max_message_bytes {
            self.counters.error(ErrorCode::TooLarge);
            let body = self.too_large.clone();
            self.outbox.frame(sid, s, body);
            return;
        }
        match wire::parse(text) {
            Ok((id, req)) => self.native_request(now, sid, id, req),
            Err(bad) => {
                self.counters.error(ErrorCode::BadRequest);
                let body = wire::error(ErrorCode::BadRequest, &bad.message, bad.id.as_ref());
                self.outbox.frame(sid, s, body);
            }
        }
    }

    fn native_request(&mut self, now: Instant, sid: Sid, id: Option<RequestId>, req: Req<'_>) {
        let id = id.as_ref();
        let result = match req {
            Req::Join { room, meta, media } => {
                let reply = Reply::Native(id.cloned());
                match self.join(now, sid, &room, meta, media, JoinKind::Request, reply) {
                    Ok(JoinOutcome::Joined(rid)) => {
                        let body = self.joined_body(rid, sid, id);
                        self.send(sid, body);
                        // After `joined`: the relay may answer at once.
                        self.media_joined(rid, sid);
                        Ok(None)
                    }
                    Ok(JoinOutcome::Full) => Ok(Some(wire::room_only("full", &room, id))),
                    Ok(JoinOutcome::Pending) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Req::Leave { room } => self
                .leave(sid, &room)
                .map(|()| Some(wire::room_only("left", &room, id))),
            Req::Message { room, to, data } if self.cluster.is_some() => {
                let data = Data { raw: data.get() };
                let reply = Reply::Native(id.cloned());
                self.cluster_message(now, sid, &room, to.as_deref(), data, reply)
                    .map(|()| None)
            }
            Req::Message { room, to, data } => {
                let data = Data { raw: data.get() };
                match (self.message(sid, &room, to.as_deref(), data), id) {
                    // A Socket.IO recipient has the message only once the
                    // shell could queue it: the ack waits for the drain
                    // (see `poll_output` and `classic_refused`).
                    (Ok(d), Some(id)) if d.classic > 0 => {
                        self.pending_ack = Some(PendingAck {
                            sid,
                            id: id.clone(),
                            delivered: d.count,
                            refused: 0,
                        });
                        Ok(None)
                    }
                    (result, _) => result.map(|d| id.map(|id| wire::ack(d.count, id))),
                }
            }
            Req::Media { room, data } => self.media_request(sid, &room, data).map(|()| None),
            Req::Ping => Ok(Some(wire::Body::new("pong").reply_to(id).finish())),
            Req::PingConfirm { last_seq } => self
                .confirm(sid, last_seq)
                .map(|()| Some(wire::Body::new("pong").reply_to(id).finish())),
            Req::Call { to, meta } => self.call(now, sid, &to, meta, id).map(|()| None),
            Req::Accept { call } => self.accept(now, sid, &call, id).map(|()| None),
            Req::Decline { call } => self.decline(sid, &call, id).map(|()| None),
            Req::Cancel { call } => self.cancel(sid, &call).map(|()| None),
        };
        match result {
            Ok(Some(body)) => self.send(sid, body),
            Ok(None) => {}
            Err(e) => {
                self.counters.error(e.code);
                self.send(sid, wire::error(e.code, &e.message, id));
            }
        }
    }

    /// A sequenced frame to one native session.
    pub(crate) fn send(&mut self, sid: Sid, body: Bytes) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            self.outbox.frame(sid, s, body);
        }
    }

    /// `ping` with `last_seq`: the client has every frame up to it, so
    /// replay forgets them. A `last_seq` beyond the last frame sent is a
    /// client bug: `bad_request`, and nothing is forgotten.
    fn confirm(&mut self, sid: Sid, last_seq: u64) -> Result<(), Refusal> {
        let s = self
            .sessions
            .get_mut(&sid)
            .ok_or_else(|| Refusal::new(ErrorCode::Internal, "session vanished"))?;
        if last_seq > s.seq {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "last_seq {last_seq} is beyond the last frame sent ({})",
                    s.seq
                ),
            ));
        }
        s.replay.trim(last_seq, s.seq);
        if self.cluster.as_ref().is_some_and(|c| c.up) {
            let session = s.id.clone();
            self.command(crate::cluster::Command::Trim { session, last_seq });
        }
        Ok(())
    }
}
