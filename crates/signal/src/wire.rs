//! The JSON edge of the native face: a borrowing request parser and the
//! writers of server frame bodies.
//!
//! `switchboard-signal-proto` holds the owned reference types; here the
//! request is parsed once without copying `data`/`meta` (they stay raw JSON
//! text and are spliced verbatim into the frames that carry them).

use std::borrow::Cow;
use std::io::Write as _;

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use switchboard_signal_proto::{
    CallEndReason, ErrorCode, IceServer, MediaKind, PROTOCOL_VERSION, RequestId,
};

/// A request of PROTOCOL.md §1/§3, borrowing from the frame text.
#[derive(Debug)]
pub(crate) enum Req<'a> {
    Join {
        room: Cow<'a, str>,
        meta: Option<&'a RawValue>,
        /// The kind asked for, if the join makes the room.
        media: Option<MediaKind>,
    },
    Leave {
        room: Cow<'a, str>,
    },
    Message {
        room: Cow<'a, str>,
        to: Option<Cow<'a, str>>,
        data: &'a RawValue,
    },
    /// For the media relay of an SFU room; `data` is checked later, by
    /// the room's kind first.
    Media {
        room: Cow<'a, str>,
        data: &'a RawValue,
    },
    Ping,
    /// A ping with `last_seq`: the client has handled every frame up to it.
    PingConfirm {
        last_seq: u64,
    },
    Call {
        to: Cow<'a, str>,
        meta: Option<&'a RawValue>,
    },
    Accept {
        call: Cow<'a, str>,
    },
    Decline {
        call: Cow<'a, str>,
    },
    Cancel {
        call: Cow<'a, str>,
    },
}

/// Every field any request may have; which are required depends on `type`.
/// Unknown fields are ignored, duplicates and mistyped ones refused.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    id: Option<RequestId>,
    #[serde(default, borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    to: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    call: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "raw_some")]
    meta: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw_some")]
    data: Option<&'a RawValue>,
    /// Only `join` reads it: raw, so that another request with a stray
    /// `media` key is not refused for its type.
    #[serde(default, borrow, deserialize_with = "raw_some")]
    media: Option<&'a RawValue>,
    /// Only `ping` reads it.
    #[serde(default)]
    last_seq: Option<u64>,
}

/// `Option<&RawValue>` would read `null` as absent; `data: null` is data.
pub(crate) fn raw_some<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<RequestId>,
}

/// A refused frame: why, and the request id when it could still be read.
#[derive(Debug)]
pub(crate) struct BadRequest {
    pub(crate) id: Option<RequestId>,
    pub(crate) message: String,
}

/// Parses one text frame: the one JSON parse a request costs.
pub(crate) fn parse(text: &str) -> Result<(Option<RequestId>, Req<'_>), BadRequest> {
    // A struct also deserializes from a JSON array; the protocol wants objects.
    if !text.trim_start().starts_with('{') {
        return Err(BadRequest {
            id: None,
            message: "a frame must be a JSON object".into(),
        });
    }
    let f: Fields<'_> = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            // Only on the error path: recover the id so the error can name it.
            let id = serde_json::from_str::<IdOnly>(text).ok().and_then(|i| i.id);
            return Err(BadRequest {
                id,
                message: format!("malformed request: {e}"),
            });
        }
    };
    let id = f.id;
    let missing = |field: &str, id: Option<RequestId>| BadRequest {
        id,
        message: format!("missing field `{field}`"),
    };
    let meta = f.meta.filter(|m| m.get() != "null");
    if let Some(m) = meta
        && !m.get().starts_with('{')
    {
        return Err(BadRequest {
            id,
            message: "`meta` must be an object".into(),
        });
    }
    let req = match &*f.ty {
        "join" => {
            let Some(room) = f.room else {
                return Err(missing("room", id));
            };
            let media = match f.media.filter(|m| m.get() != "null") {
                None => None,
                Some(m) => match serde_json::from_str::<MediaKind>(m.get()) {
                    Ok(kind) => Some(kind),
                    Err(_) => {
                        return Err(BadRequest {
                            id,
                            message: "`media` must be \"mesh\" or \"sfu\"".into(),
                        });
                    }
                },
            };
            Req::Join { room, meta, media }
        }
        "leave" => match f.room {
            Some(room) => Req::Leave { room },
            None => return Err(missing("room", id)),
        },
        "message" => match (f.room, f.data) {
            (Some(room), Some(data)) => Req::Message {
                room,
                to: f.to,
                data,
            },
            (None, _) => return Err(missing("room", id)),
            (_, None) => return Err(missing("data", id)),
        },
        "media" => match (f.room, f.data) {
            (Some(room), Some(data)) => Req::Media { room, data },
            (None, _) => return Err(missing("room", id)),
            (_, None) => return Err(missing("data", id)),
        },
        "ping" => match f.last_seq {
            None => Req::Ping,
            Some(last_seq) => Req::PingConfirm { last_seq },
        },
        "call" => match f.to {
            Some(to) => Req::Call { to, meta },
            None => return Err(missing("to", id)),
        },
        "accept" | "decline" | "cancel" => {
            let Some(call) = f.call else {
                return Err(missing("call", id));
            };
            match &*f.ty {
                "accept" => Req::Accept { call },
                "decline" => Req::Decline { call },
                _ => Req::Cancel { call },
            }
        }
        other => {
            let message = format!("unknown request type {other:?}");
            return Err(BadRequest { id, message });
        }
    };
    Ok((id, req))
}

/// How far [`scan_id`] looks into a frame.
pub(crate) const ID_SCAN_LIMIT: usize = 256;

/// The request's top-level `id`, found without parsing the frame, for the
/// `reply_to` of a refusal that must stay cheap (`rate_limited`). Looks at
/// the first [`ID_SCAN_LIMIT`] bytes only and gives up on anything unusual
/// (an escaped key or string, a non-integer number): the answer then goes
/// without `reply_to`.
pub(crate) fn scan_id(text: &str) -> Option<RequestId> {
    let b = &text.as_bytes()[..text.len().min(ID_SCAN_LIMIT)];
    let mut depth = 0u32;
    let mut i = 0;
    // Whether the next string at depth 1 is a key (after `{` or `,`).
    let mut expect_key = false;
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1 && b[i] == b'{';
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' => expect_key = depth == 1,
            b'"' => {
                let start = i + 1;
                let len = b[start..].iter().position(|&c| c == b'"' || c == b'\\')?;
                let end = start + len;
                if b.get(end) != Some(&b'"') {
                    return None;
                }
                if depth == 1 && expect_key && &b[start..end] == b"id" {
                    return id_value(&b[end + 1..]);
                }
                expect_key = false;
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The value after `"id"`: `: 12` or `: "x"`, without escapes.
fn id_value(rest: &[u8]) -> Option<RequestId> {
    let rest = std::str::from_utf8(rest).ok()?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        let end = s.find(['"', '\\'])?;
        return (s.as_bytes()[end] == b'"').then(|| RequestId::Str(s[..end].to_owned()));
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    let after = rest[end..].trim_start();
    if !(after.starts_with(',') || after.starts_with('}')) {
        return None;
    }
    rest[..end].parse().ok().map(RequestId::Int)
}

/// Writes one frame body: `{"type":T` then fields, no `seq`.
pub(crate) struct Body(Vec<u8>);

impl Body {
    pub(crate) fn new(ty: &str) -> Self {
        Body::with_capacity(ty, 96)
    }

    /// For bodies that carry a payload: one allocation, no regrowth.
    pub(crate) fn with_capacity(ty: &str, capacity: usize) -> Self {
        let mut v = Vec::with_capacity(capacity);
        v.extend_from_slice(b"{\"type\":\"");
        v.extend_from_slice(ty.as_bytes());
        v.push(b'"');
        Body(v)
    }

    fn key(&mut self, key: &str) {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn string(&mut self, s: &str) {
        // Writing into a Vec cannot fail, and a &str is always serializable.
        let _ = serde_json::to_writer(&mut self.0, s);
    }

    pub(crate) fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        self.string(value);
        self
    }

    pub(crate) fn opt_str(mut self, key: &str, value: Option<&str>) -> Self {
        self.key(key);
        match value {
            Some(v) => self.string(v),
            None => self.0.extend_from_slice(b"null"),
        }
        self
    }

    /// `value` must be valid JSON text (a `RawValue` or serde output).
    pub(crate) fn raw(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        self.0.extend_from_slice(value.as_bytes());
        self
    }

    /// Absent or `null` meta is written as `{}`.
    pub(crate) fn meta(self, key: &str, meta: Option<&RawValue>) -> Self {
        self.raw(key, meta.map_or("{}", RawValue::get))
    }

    pub(crate) fn num(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        // Writing into a Vec cannot fail.
        let _ = write!(self.0, "{value}");
        self
    }

    pub(crate) fn reply_to(mut self, id: Option<&RequestId>) -> Self {
        if let Some(id) = id {
            self.key("reply_to");
            match id {
                RequestId::Int(v) => {
                    let _ = write!(self.0, "{v}");
                }
                RequestId::Str(v) => self.string(v),
            }
        }
        self
    }

    /// `[{"peer":P,"meta":M},..]`
    pub(crate) fn peers<'a>(
        mut self,
        key: &str,
        peers: impl Iterator<Item = (&'a str, Option<&'a RawValue>)>,
    ) -> Self {
        self.key(key);
        self.0.push(b'[');
        for (i, (peer, meta)) in peers.enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            self.0.extend_from_slice(b"{\"peer\":");
            self.string(peer);
            self.0.extend_from_slice(b",\"meta\":");
            self.0
                .extend_from_slice(meta.map_or("{}", RawValue::get).as_bytes());
            self.0.push(b'}');
        }
        self.0.push(b']');
        self
    }

    pub(crate) fn finish(mut self) -> Bytes {
        self.0.push(b'}');
        // Bodies may sit in replay buffers for long: do not keep slack.
        if self.0.capacity() - self.0.len() > 32 {
            self.0.shrink_to_fit();
        }
        Bytes::from(self.0)
    }
}

pub(crate) fn welcome(session: &str, token: &str, peer: &str, ice: &[IceServer]) -> Bytes {
    let ice = serde_json::to_string(ice).unwrap_or_else(|_| "[]".to_owned());
    Body::new("welcome")
        .num("protocol", u64::from(PROTOCOL_VERSION))
        .str("session", session)
        .str("resume_token", token)
        .str("peer", peer)
        .raw("ice_servers", &ice)
        .finish()
}

pub(crate) fn resumed(session: &str, peer: &str) -> Bytes {
    Body::new("resumed")
        .str("session", session)
        .str("peer", peer)
        .finish()
}

pub(crate) fn error(code: ErrorCode, message: &str, reply_to: Option<&RequestId>) -> Bytes {
    Body::new("error")
        .str("code", code.as_str())
        .str("message", message)
        .reply_to(reply_to)
        .finish()
}

pub(crate) fn room_only(ty: &str, room: &str, reply_to: Option<&RequestId>) -> Bytes {
    Body::new(ty).str("room", room).reply_to(reply_to).finish()
}

pub(crate) fn bye(room: &str, peer: &str) -> Bytes {
    Body::new("bye")
        .str("room", room)
        .str("peer", peer)
        .finish()
}

pub(crate) fn other_joined(room: &str, peer: &str, meta: Option<&RawValue>) -> Bytes {
    Body::new("other_joined")
        .str("room", room)
        .str("peer", peer)
        .meta("meta", meta)
        .finish()
}

pub(crate) fn message(room: &str, from: &str, data: &str) -> Bytes {
    // Escapes may still grow it; the common case fits.
    Body::with_capacity("message", 48 + room.len() + from.len() + data.len())
        .str("room", room)
        .str("from", from)
        .raw("data", data)
        .finish()
}

/// `{"type":"media","room":R,"data":D}`: `data` is the relay's JSON text.
pub(crate) fn media(room: &str, data: &str) -> Bytes {
    Body::with_capacity("media", 32 + room.len() + data.len())
        .str("room", room)
        .raw("data", data)
        .finish()
}

/// An `error` about an SFU room's media: it names the room, as `kicked`
/// does, for a client in several rooms.
pub(crate) fn room_error(code: ErrorCode, message: &str, room: &str) -> Bytes {
    Body::new("error")
        .str("code", code.as_str())
        .str("message", message)
        .str("room", room)
        .finish()
}

/// `{"type":"ack","delivered":N,"reply_to":ID}`, sized for a short id.
pub(crate) fn ack(delivered: u64, reply_to: &RequestId) -> Bytes {
    Body::with_capacity("ack", 64)
        .num("delivered", delivered)
        .reply_to(Some(reply_to))
        .finish()
}

pub(crate) fn call_ended(call: &str, reason: CallEndReason) -> Bytes {
    Body::new("call_ended")
        .str("call", call)
        .str("reason", reason.as_str())
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(text: &str) -> BadRequest {
        match parse(text) {
            Ok(r) => panic!("{text} parsed as {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_every_request() {
        let (id, r) = parse(r#"{"type":"message","room":"r","to":"p","data":{"a":[1]},"id":3}"#)
            .expect("valid");
        assert_eq!(id, Some(RequestId::Int(3)));
        match r {
            Req::Message { room, to, data } => {
                assert_eq!(room, "r");
                assert_eq!(to.as_deref(), Some("p"));
                assert_eq!(data.get(), r#"{"a":[1]}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(r#"{"type":"message","room":"r","data":null}"#),
            Ok((None, Req::Message { data, .. })) if data.get() == "null"
        ));
        assert!(matches!(
            parse(r#"{"type":"ping","extra":1}"#),
            Ok((None, Req::Ping))
        ));
        assert!(matches!(
            parse(r#"{"type":"join","room":"a\u0062","meta":null}"#),
            Ok((None, Req::Join { room, meta: None, media: None })) if room == "ab"
        ));
        assert!(matches!(
            parse(r#"{"type":"join","room":"r","media":"sfu"}"#),
            Ok((
                None,
                Req::Join {
                    media: Some(MediaKind::Sfu),
                    ..
                }
            ))
        ));
        assert!(matches!(
            parse(r#"{"type":"join","room":"r","media":null}"#),
            Ok((None, Req::Join { media: None, .. }))
        ));
        // Only `join` reads `media`: elsewhere it is an unknown field.
        assert!(matches!(
            parse(r#"{"type":"leave","room":"r","media":5}"#),
            Ok((None, Req::Leave { .. }))
        ));
        assert!(matches!(
            parse(r#"{"type":"media","room":"r","data":{"kind":"offer","sdp":"v=0"},"id":2}"#),
            Ok((Some(RequestId::Int(2)), Req::Media { room, data }))
                if room == "r" && data.get() == r#"{"kind":"offer","sdp":"v=0"}"#
        ));
        assert!(matches!(
            parse(r#"{"type":"cancel","call":"c"}"#),
            Ok((None, Req::Cancel { .. }))
        ));
    }

    #[test]
    fn refuses_bad_frames_keeping_the_id() {
        assert_eq!(
            bad(r#"{"type":"join","id":"x"}"#).id,
            Some(RequestId::Str("x".into()))
        );
        assert_eq!(
            bad(r#"{"type":"join","room":5,"id":9}"#).id,
            Some(RequestId::Int(9))
        );
        assert_eq!(
            bad(r#"{"type":"dance","id":1}"#).id,
            Some(RequestId::Int(1))
        );
        assert!(
            bad(r#"{"type":"join","room":"r","meta":[1]}"#)
                .message
                .contains("meta")
        );
        assert!(bad(r#"["join","r"]"#).id.is_none());
        let b = bad(r#"{"type":"join","room":"r","media":"p2p","id":4}"#);
        assert_eq!(
            (b.id, b.message.contains("mesh")),
            (Some(RequestId::Int(4)), true)
        );
        assert!(
            bad(r#"{"type":"join","room":"r","media":1}"#)
                .message
                .contains("media")
        );
        assert!(
            bad(r#"{"type":"media","data":{}}"#)
                .message
                .contains("room")
        );
        assert!(
            bad(r#"{"type":"media","room":"r"}"#)
                .message
                .contains("data")
        );
        assert!(bad("nope").id.is_none());
        assert!(bad("").id.is_none());
        assert!(bad(r#"{"room":"r"}"#).message.contains("type"));
        assert!(
            bad(r#"{"type":"message","room":"r"}"#)
                .message
                .contains("data")
        );
        assert!(
            bad(r#"{"type":"ping","type":"ping"}"#)
                .message
                .contains("duplicate")
        );
        assert!(bad(r#"{"type":"ping","id":1.5}"#).id.is_none());
    }

    #[test]
    fn ping_may_confirm() {
        assert!(matches!(
            parse(r#"{"type":"ping","last_seq":7}"#),
            Ok((None, Req::PingConfirm { last_seq: 7 }))
        ));
        assert!(
            bad(r#"{"type":"ping","last_seq":-1}"#)
                .message
                .contains("malformed")
        );
        assert!(
            bad(r#"{"type":"ping","last_seq":"3"}"#)
                .message
                .contains("malformed")
        );
    }

    #[test]
    fn scans_the_top_level_id_only() {
        let int = |v| Some(RequestId::Int(v));
        assert_eq!(scan_id(r#"{"type":"message","id":42,"room":"r"}"#), int(42));
        assert_eq!(scan_id(r#"{ "id" : -3 }"#), int(-3));
        assert_eq!(
            scan_id(r#"{"data":{"id":1},"id":"m1"}"#),
            Some(RequestId::Str("m1".into()))
        );
        assert_eq!(scan_id(r#"{"data":["id",{"id":2}],"x":"id"}"#), None);
        assert_eq!(scan_id(r#"{"type":"id","room":"id"}"#), None);
        assert_eq!(scan_id(r#"{"id":1.5}"#), None);
        assert_eq!(scan_id(r#"{"id":"a\"b"}"#), None);
        assert_eq!(scan_id(r#"{"k\"id":1,"id":2}"#), None);
        assert_eq!(scan_id("not json"), None);
        let far = format!(r#"{{"data":"{}","id":1}}"#, "x".repeat(ID_SCAN_LIMIT));
        assert_eq!(scan_id(&far), None, "beyond the scan limit");
        // Whatever the bytes, it never panics.
        for t in [
            "{\"id\":",
            "{\"id\"",
            "{\"",
            "{\"id\":\"",
            "{\"id\":99999999999999999999}",
        ] {
            assert_eq!(scan_id(t), None, "{t}");
        }
    }

    #[test]
    fn bodies_are_json_objects_without_seq() {
        let b = Body::new("joined")
            .str("room", "r\"")
            .peers("peers", [("a", None)].into_iter())
            .reply_to(Some(&RequestId::Str("q".into())))
            .finish();
        let v: serde_json::Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"type":"joined","room":"r\"","peers":[{"peer":"a","meta":{}}],"reply_to":"q"})
        );
    }
}
