//! The native face (PROTOCOL.md §1): text frames in, sequenced JSON out.

use std::time::Instant;

use bytes::Bytes;
use switchboard_signal_proto::{ErrorCode, RequestId};

use crate::outbox::Data;
use crate::presence::{JoinKind, JoinOutcome};
use crate::session::Sid;
use crate::wire::{self, Req};
use crate::{Face, SignalCore};

impl SignalCore {
    pub(crate) fn native_text(&mut self, now: Instant, sid: Sid, text: &str) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.face != Face::Native {
            return;
        }
        let allowed = s
            .bucket
            .take(now, self.config.rate_per_sec, self.config.rate_burst);
        // Measured before parsing: an oversized frame costs no parse.
        if text.len() > self.config.max_message_bytes {
            self.counters.error(ErrorCode::TooLarge);
            let body = self.too_large.clone();
            self.outbox.frame(s, body);
            return;
        }
        let parsed = wire::parse(text);
        if !allowed {
            self.counters.error(ErrorCode::RateLimited);
            let body = match &parsed {
                Ok((Some(id), _)) | Err(wire::BadRequest { id: Some(id), .. }) => wire::error(
                    ErrorCode::RateLimited,
                    "too many requests; slow down",
                    Some(id),
                ),
                _ => self.rate_limited.clone(),
            };
            self.outbox.frame(s, body);
            return;
        }
        match parsed {
            Ok((id, req)) => self.native_request(now, sid, id, req),
            Err(bad) => {
                self.counters.error(ErrorCode::BadRequest);
                let body = wire::error(ErrorCode::BadRequest, &bad.message, bad.id.as_ref());
                self.outbox.frame(s, body);
            }
        }
    }

    fn native_request(&mut self, now: Instant, sid: Sid, id: Option<RequestId>, req: Req<'_>) {
        let id = id.as_ref();
        let result = match req {
            Req::Join { room, meta } => match self.join(sid, &room, meta, JoinKind::Request) {
                Ok(JoinOutcome::Joined(rid)) => Ok(Some(self.joined_body(rid, sid, id))),
                Ok(JoinOutcome::Full) => Ok(Some(wire::room_only("full", &room, id))),
                Err(e) => Err(e),
            },
            Req::Leave { room } => self
                .leave(sid, &room)
                .map(|()| Some(wire::room_only("left", &room, id))),
            Req::Message { room, to, data } => {
                let data = Data {
                    raw: data.get(),
                    value: None,
                };
                self.message(sid, &room, to.as_deref(), data)
                    .map(|n| id.map(|id| wire::ack(n, id)))
            }
            Req::Ping => Ok(Some(wire::Body::new("pong").reply_to(id).finish())),
            Req::Call { to, meta } => self.call(now, sid, &to, meta, id).map(|()| None),
            Req::Accept { call } => self.accept(sid, &call, id).map(|()| None),
            Req::Decline { call } => self.decline(sid, &call).map(|()| None),
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
            self.outbox.frame(s, body);
        }
    }
}
