//! The classic face (PROTOCOL.md §2): socket.io events in and out, sharing
//! rooms with native peers. No seq, no replay: a disconnect is final.

use std::time::Instant;

use serde_json::{Value, json};
use switchboard_signal_proto::ErrorCode;

use crate::outbox::Data;
use crate::presence::{JoinKind, JoinOutcome};
use crate::session::Sid;
use crate::{ClassicEvent, Face, Refusal, SignalCore};

fn error_object(e: &Refusal) -> Value {
    json!({"code": e.code.as_str(), "message": e.message})
}

fn room_arg(args: &[Value]) -> Result<&str, Refusal> {
    args.first().and_then(Value::as_str).ok_or_else(|| {
        Refusal::new(
            ErrorCode::BadRequest,
            "the first argument must be the room name",
        )
    })
}

impl SignalCore {
    /// Runs one classic event; returns the ack payload (used when asked).
    pub(crate) fn classic_event(
        &mut self,
        now: Instant,
        sid: Sid,
        event: &str,
        args: &[Value],
    ) -> Value {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return json!({"code": "internal", "message": "no session"});
        };
        if s.face != Face::Classic {
            return json!({"code": "bad_request", "message": "not a classic connection"});
        }
        let allowed = s
            .bucket
            .take(now, self.config.rate_per_sec, self.config.rate_burst);
        let result = if allowed {
            self.classic_request(sid, event, args)
        } else {
            Err(Refusal::new(
                ErrorCode::RateLimited,
                "too many requests; slow down",
            ))
        };
        match result {
            Ok(ack) => ack,
            Err(e) => {
                self.counters.error(e.code);
                let object = error_object(&e);
                self.emit(sid, "error", vec![object.clone()]);
                let mut ack = object;
                if event == "message"
                    && let Some(map) = ack.as_object_mut()
                {
                    map.insert("delivered".into(), Value::from(0));
                }
                ack
            }
        }
    }

    fn classic_request(&mut self, sid: Sid, event: &str, args: &[Value]) -> Result<Value, Refusal> {
        let peer = |core: &Self| {
            core.sessions
                .get(&sid)
                .map_or_else(String::new, |s| s.peer.to_string())
        };
        match event {
            "join" => {
                let room = room_arg(args)?;
                let outcome = self.join(sid, room, None, JoinKind::Request)?;
                let id = peer(self);
                let (name, ack) = match outcome {
                    JoinOutcome::Joined(_) => ("joined", json!({"ok": true})),
                    JoinOutcome::Full => ("full", json!({"full": true})),
                };
                self.emit(sid, name, vec![Value::from(room), Value::from(id)]);
                Ok(ack)
            }
            "leave" => {
                let room = room_arg(args)?;
                self.leave(sid, room)?;
                let id = peer(self);
                self.emit(sid, "leaved", vec![Value::from(room), Value::from(id)]);
                Ok(json!({"ok": true}))
            }
            "message" => {
                let room = room_arg(args)?;
                let data = args.get(1).unwrap_or(&Value::Null);
                // Serialized once: it is the size check and the native body.
                let raw = serde_json::to_string(data)
                    .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?;
                if raw.len() > self.config.max_message_bytes {
                    return Err(Refusal::new(
                        ErrorCode::TooLarge,
                        format!("data over {} bytes", self.config.max_message_bytes),
                    ));
                }
                let data = Data {
                    raw: &raw,
                    value: Some(data),
                };
                let delivered = self.message(sid, room, None, data)?;
                Ok(json!({ "delivered": delivered }))
            }
            other => Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("unknown event {other:?}; use join, message or leave"),
            )),
        }
    }

    fn emit(&mut self, sid: Sid, event: &'static str, args: Vec<Value>) {
        if let Some(s) = self.sessions.get(&sid) {
            self.outbox.classic(s, ClassicEvent { event, args });
        }
    }
}
