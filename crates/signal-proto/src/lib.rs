//! Serde types of switchboard's wire protocol, version 1 (`PROTOCOL.md`).
//!
//! Shared by the server, the integration tests and the load generator. Every
//! type serializes to and deserializes from exactly the JSON of the protocol:
//!
//! ```
//! use switchboard_signal_proto::{ClientFrame, Request, RequestId, ServerFrame, ServerEvent};
//!
//! let join = ClientFrame::with_id(
//!     7,
//!     Request::Join { room: "lobby".into(), meta: None, media: None },
//! );
//! assert_eq!(
//!     serde_json::to_string(&join).unwrap(),
//!     r#"{"id":7,"type":"join","room":"lobby"}"#
//! );
//!
//! let frame: ServerFrame =
//!     serde_json::from_str(r#"{"seq":3,"type":"ack","delivered":2,"reply_to":"m1"}"#).unwrap();
//! assert_eq!(frame.seq, Some(3));
//! assert_eq!(frame.reply_to, Some(RequestId::Str("m1".into())));
//! assert_eq!(frame.event, ServerEvent::Ack { delivered: 2 });
//! ```
//!
//! The server itself parses requests with a borrowing fast path of its own;
//! these owned types are the reference shape and what clients use.
#![warn(missing_docs, unreachable_pub)]

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// One entry of `ice_servers`, in the shape of the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`, `turn:` and `turns:` URLs.
    pub urls: Vec<String>,
    /// Time-limited TURN username, `"<unix expiry>:<peer id>"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `base64(HMAC-SHA1(secret, username))`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A request's `id`, echoed as `reply_to`: a string or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestId {
    /// An integer id (any value that fits `i64`).
    Int(i64),
    /// A string id.
    Str(String),
}

impl From<i64> for RequestId {
    fn from(v: i64) -> Self {
        RequestId::Int(v)
    }
}

impl From<&str> for RequestId {
    fn from(v: &str) -> Self {
        RequestId::Str(v.to_owned())
    }
}

impl From<String> for RequestId {
    fn from(v: String) -> Self {
        RequestId::Str(v)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Int(v) => write!(f, "{v}"),
            RequestId::Str(v) => f.write_str(v),
        }
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RequestId::Int(v) => s.serialize_i64(*v),
            RequestId::Str(v) => s.serialize_str(v),
        }
    }
}

// Hand-written rather than `#[serde(untagged)]`: it is on the server's hot
// path and an untagged enum buffers its input first.
impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl serde::de::Visitor<'_> for IdVisitor {
            type Value = RequestId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RequestId, E> {
                Ok(RequestId::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RequestId, E> {
                i64::try_from(v)
                    .map(RequestId::Int)
                    .map_err(|_| E::custom("integer id out of range"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RequestId, E> {
                Ok(RequestId::Str(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<RequestId, E> {
                Ok(RequestId::Str(v))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not a JSON object, unknown `type`, missing or mistyped field, binary frame.
    BadRequest,
    /// Larger than `limits.max_message_bytes`.
    TooLarge,
    /// The room named is not one the session is in.
    NotInRoom,
    /// `join` of a room the session is already in.
    AlreadyJoined,
    /// `to` names a peer that is not in the room.
    NoSuchPeer,
    /// `call` of a user with no connection.
    NoSuchUser,
    /// `accept`/`decline`/`cancel` of a call that is not ringing, or not yours.
    NoSuchCall,
    /// Not allowed: token scope, private call room, room limit.
    Forbidden,
    /// The session's request rate is over its limit.
    RateLimited,
    /// A resume could not be honoured; a fresh `welcome` follows.
    ResumeFailed,
    /// A server fault.
    Internal,
    /// The cluster backplane is unreachable (PROTOCOL.md §6): what needs
    /// the other nodes is refused until it is back.
    Unavailable,
    /// An operator removed the peer from a room (PROTOCOL.md §8): the
    /// error names the `room`, and `left` follows. The session stays
    /// connected and may join again.
    Kicked,
}

impl ErrorCode {
    /// Every code, in declaration order: `ALL[code.index()] == code`. For
    /// per-code counters (`[u64; ErrorCode::ALL.len()]`).
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::BadRequest,
        ErrorCode::TooLarge,
        ErrorCode::NotInRoom,
        ErrorCode::AlreadyJoined,
        ErrorCode::NoSuchPeer,
        ErrorCode::NoSuchUser,
        ErrorCode::NoSuchCall,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::ResumeFailed,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::Kicked,
    ];

    /// This code's position in [`ErrorCode::ALL`].
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            ErrorCode::BadRequest => 0,
            ErrorCode::TooLarge => 1,
            ErrorCode::NotInRoom => 2,
            ErrorCode::AlreadyJoined => 3,
            ErrorCode::NoSuchPeer => 4,
            ErrorCode::NoSuchUser => 5,
            ErrorCode::NoSuchCall => 6,
            ErrorCode::Forbidden => 7,
            ErrorCode::RateLimited => 8,
            ErrorCode::ResumeFailed => 9,
            ErrorCode::Internal => 10,
            ErrorCode::Unavailable => 11,
            ErrorCode::Kicked => 12,
        }
    }

    /// The wire spelling, e.g. `"bad_request"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::NoSuchPeer => "no_such_peer",
            ErrorCode::NoSuchUser => "no_such_user",
            ErrorCode::NoSuchCall => "no_such_call",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Kicked => "kicked",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a room carries media (PROTOCOL.md §7): decided by the join that
/// makes the room (its `media`, else the server's `rooms.media`); a later
/// join gets the room's kind whatever it asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// Peers send their media to each other (one connection per pair).
    #[default]
    Mesh,
    /// Each peer sends its media once, to the server, which forwards it;
    /// offers, answers and candidates go with the server as `media`.
    Sfu,
}

impl MediaKind {
    /// The wire spelling: `"mesh"` or `"sfu"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Mesh => "mesh",
            MediaKind::Sfu => "sfu",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client request (PROTOCOL.md §1 and §3), tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Enter a room.
    Join {
        /// Room name: 1 to 128 bytes of UTF-8, no control characters.
        room: String,
        /// Shown to the other peers in `peers` and `other_joined`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meta: Option<Value>,
        /// The kind of the room if this join makes it (PROTOCOL.md §7);
        /// absent: the server's `rooms.media`. Ignored for a room that
        /// exists: `joined.media` says which it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<MediaKind>,
    },
    /// Leave a room.
    Leave {
        /// Room name.
        room: String,
    },
    /// Send `data` to one peer (`to`) or to every other peer of the room.
    Message {
        /// Room name.
        room: String,
        /// A peer id; absent means everyone else in the room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// Anything JSON; opaque to the server.
        data: Value,
    },
    /// Negotiation with the server's media relay in an SFU room (§7): no
    /// reply on success (the server's answer comes as a `media` frame).
    Media {
        /// Room name: an SFU room the client is in.
        room: String,
        /// `{"kind":"offer"|"answer","sdp":..}` or
        /// `{"kind":"candidate","candidate":{..}}` (an `RTCIceCandidateInit`).
        data: Value,
    },
    /// Answered by `pong`.
    Ping,
    /// Ring a user.
    Call {
        /// The callee's user id.
        to: String,
        /// Shown to the callee in `incoming_call`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meta: Option<Value>,
    },
    /// Callee: take the call.
    Accept {
        /// Call id from `incoming_call`.
        call: String,
    },
    /// Callee: refuse the call.
    Decline {
        /// Call id from `incoming_call`.
        call: String,
    },
    /// Caller: hang up before an answer.
    Cancel {
        /// Call id from `ringing`.
        call: String,
    },
}

/// A request with its optional `id`: one text frame from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Echoed as `reply_to` in the replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

impl ClientFrame {
    /// A request without an id.
    #[must_use]
    pub fn new(request: Request) -> Self {
        ClientFrame { id: None, request }
    }

    /// A request with an id.
    #[must_use]
    pub fn with_id(id: impl Into<RequestId>, request: Request) -> Self {
        ClientFrame {
            id: Some(id.into()),
            request,
        }
    }
}

/// One entry of `joined.peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer id.
    pub peer: String,
    /// What the peer gave in its `join` (`{}` when nothing).
    pub meta: Value,
}

/// Why a call ended (`call_ended.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallEndReason {
    /// Another connection of the callee accepted.
    AnsweredElsewhere,
    /// Another connection of the callee declined.
    Declined,
    /// The caller cancelled.
    Cancelled,
    /// Nobody answered within `calls.ring_timeout_secs`.
    NoAnswer,
    /// The other side left for good while it rang.
    Gone,
}

impl CallEndReason {
    /// The wire spelling, e.g. `"no_answer"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CallEndReason::AnsweredElsewhere => "answered_elsewhere",
            CallEndReason::Declined => "declined",
            CallEndReason::Cancelled => "cancelled",
            CallEndReason::NoAnswer => "no_answer",
            CallEndReason::Gone => "gone",
        }
    }
}

/// What a server frame says, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// The first frame of a session.
    Welcome {
        /// Always [`PROTOCOL_VERSION`].
        protocol: u32,
        /// Session id, for resuming.
        session: String,
        /// Secret needed to resume.
        resume_token: String,
        /// This client's peer id.
        peer: String,
        /// For `new RTCPeerConnection({iceServers})`.
        ice_servers: Vec<IceServer>,
    },
    /// The first frame after a successful resume.
    Resumed {
        /// Session id.
        session: String,
        /// Peer id (unchanged).
        peer: String,
    },
    /// Reply to `join`.
    Joined {
        /// Room name.
        room: String,
        /// This client's peer id.
        peer: String,
        /// The peers already in the room, in join order.
        peers: Vec<PeerInfo>,
        /// The room's kind (always sent; read as `mesh` when absent, as
        /// from a server before §7).
        #[serde(default)]
        media: MediaKind,
    },
    /// Someone entered a room this client is in.
    OtherJoined {
        /// Room name.
        room: String,
        /// The newcomer.
        peer: String,
        /// The newcomer's `meta` (`{}` when none).
        meta: Value,
    },
    /// Reply to `join` when the room is at capacity.
    Full {
        /// Room name.
        room: String,
    },
    /// Reply to `leave`.
    Left {
        /// Room name.
        room: String,
    },
    /// Someone left a room this client is in.
    Bye {
        /// Room name.
        room: String,
        /// Who left.
        peer: String,
    },
    /// Data from another peer.
    Message {
        /// Room name.
        room: String,
        /// Sender's peer id.
        from: String,
        /// The sender's `data`, verbatim.
        data: Value,
    },
    /// From the server's media relay in an SFU room (§7): an offer, an
    /// answer or a candidate, in the shapes of [`Request::Media`].
    Media {
        /// Room name.
        room: String,
        /// `{"kind":"offer"|"answer","sdp":..}` or
        /// `{"kind":"candidate","candidate":{..}}`.
        data: Value,
    },
    /// Reply to a `message` that had an `id`.
    Ack {
        /// Recipients it was queued for.
        delivered: u64,
    },
    /// Reply to `ping`.
    Pong,
    /// A request failed.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable text.
        message: String,
        /// The room it concerns: on `kicked`, and on errors of an SFU
        /// room's media (§7).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
    /// Reply to `call`.
    Ringing {
        /// Call id.
        call: String,
    },
    /// Someone rings this client's user.
    IncomingCall {
        /// Call id.
        call: String,
        /// Caller's user id (`null` for an anonymous caller).
        from: Option<String>,
        /// The caller's `meta` (`{}` when none).
        meta: Value,
    },
    /// To the caller: the callee took the call; `joined` follows.
    Accepted {
        /// Call id.
        call: String,
        /// The call's private room.
        room: String,
    },
    /// To the caller: the callee refused.
    Declined {
        /// Call id.
        call: String,
    },
    /// The call stopped ringing.
    CallEnded {
        /// Call id.
        call: String,
        /// Why.
        reason: CallEndReason,
    },
}

/// One text frame from the server: `seq`, `reply_to` and the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerFrame {
    /// Absent only on `welcome`, `resumed` and a `resume_failed` error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The request's `id`, on replies to requests that had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<RequestId>,
    /// What the frame says.
    #[serde(flatten)]
    pub event: ServerEvent,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn arb_value() -> impl Strategy<Value = Value> {
        // No floats: JSON number text does not round-trip every f64.
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|v| json!(v)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_id() -> impl Strategy<Value = Option<RequestId>> {
        prop::option::of(prop_oneof![
            any::<i64>().prop_map(RequestId::Int),
            ".{0,10}".prop_map(RequestId::Str),
        ])
    }

    /// `meta: null` reads back as no meta, which is what it means.
    fn arb_meta() -> impl Strategy<Value = Option<Value>> {
        prop::option::of(arb_value().prop_filter("null meta is absent", |v| !v.is_null()))
    }

    fn arb_media() -> impl Strategy<Value = MediaKind> {
        prop_oneof![Just(MediaKind::Mesh), Just(MediaKind::Sfu)]
    }

    /// The shapes of §7, and anything else (the types do not check `data`).
    fn arb_media_data() -> impl Strategy<Value = Value> {
        prop_oneof![
            ".{0,40}".prop_map(|sdp| json!({"kind":"offer","sdp":sdp})),
            ".{0,40}".prop_map(|sdp| json!({"kind":"answer","sdp":sdp})),
            (".{0,30}", prop::option::of(0u16..4)).prop_map(|(c, line)| json!({
                "kind":"candidate",
                "candidate":{"candidate":c,"sdpMid":"0","sdpMLineIndex":line}
            })),
            arb_value(),
        ]
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let s = || ".{0,20}";
        prop_oneof![
            (s(), arb_meta(), prop::option::of(arb_media()))
                .prop_map(|(room, meta, media)| Request::Join { room, meta, media }),
            s().prop_map(|room| Request::Leave { room }),
            (s(), prop::option::of(s()), arb_value())
                .prop_map(|(room, to, data)| Request::Message { room, to, data }),
            (s(), arb_media_data()).prop_map(|(room, data)| Request::Media { room, data }),
            Just(Request::Ping),
            (s(), arb_meta()).prop_map(|(to, meta)| Request::Call { to, meta }),
            s().prop_map(|call| Request::Accept { call }),
            s().prop_map(|call| Request::Decline { call }),
            s().prop_map(|call| Request::Cancel { call }),
        ]
    }

    fn arb_event() -> impl Strategy<Value = ServerEvent> {
        let s = || "[a-zA-Z0-9_-]{0,12}";
        let reason = prop_oneof![
            Just(CallEndReason::AnsweredElsewhere),
            Just(CallEndReason::Declined),
            Just(CallEndReason::Cancelled),
            Just(CallEndReason::NoAnswer),
            Just(CallEndReason::Gone),
        ];
        prop_oneof![
            (s(), s(), s()).prop_map(|(session, resume_token, peer)| ServerEvent::Welcome {
                protocol: PROTOCOL_VERSION,
                session,
                resume_token,
                peer,
                ice_servers: vec![IceServer {
                    urls: vec!["stun:h:3478".into()],
                    username: None,
                    credential: None
                }],
            }),
            (
                s(),
                s(),
                prop::collection::vec((s(), arb_value()), 0..3),
                arb_media()
            )
                .prop_map(|(room, peer, peers, media)| ServerEvent::Joined {
                    room,
                    peer,
                    peers: peers
                        .into_iter()
                        .map(|(peer, meta)| PeerInfo { peer, meta })
                        .collect(),
                    media,
                }),
            (s(), arb_media_data()).prop_map(|(room, data)| ServerEvent::Media { room, data }),
            (s(), s(), arb_value()).prop_map(|(room, from, data)| ServerEvent::Message {
                room,
                from,
                data
            }),
            any::<u64>().prop_map(|delivered| ServerEvent::Ack { delivered }),
            Just(ServerEvent::Pong),
            s().prop_map(|message| ServerEvent::Error {
                code: ErrorCode::NoSuchPeer,
                message,
                room: None,
            }),
            (s(), s()).prop_map(|(message, room)| ServerEvent::Error {
                code: ErrorCode::BadRequest,
                message,
                room: Some(room),
            }),
            (s(), s()).prop_map(|(message, room)| ServerEvent::Error {
                code: ErrorCode::Kicked,
                message,
                room: Some(room),
            }),
            (s(), prop::option::of(s()), arb_value())
                .prop_map(|(call, from, meta)| ServerEvent::IncomingCall { call, from, meta }),
            (s(), reason).prop_map(|(call, reason)| ServerEvent::CallEnded { call, reason }),
        ]
    }

    proptest! {
        #[test]
        fn client_frames_round_trip(id in arb_id(), request in arb_request()) {
            let frame = ClientFrame { id, request };
            let text = serde_json::to_string(&frame).unwrap();
            let back: ClientFrame = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, frame);
        }

        #[test]
        fn server_frames_round_trip(
            seq in prop::option::of(any::<u64>()),
            reply_to in arb_id(),
            event in arb_event(),
        ) {
            let frame = ServerFrame { seq, reply_to, event };
            let text = serde_json::to_string(&frame).unwrap();
            let back: ServerFrame = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, frame);
        }
    }

    #[test]
    fn error_code_indices_follow_all() {
        let mut spellings = std::collections::HashSet::new();
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i);
            assert!(spellings.insert(code.as_str()));
        }
    }

    #[test]
    fn wire_spellings() {
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"message","room":"r","data":null,"id":"x"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::with_id(
                "x",
                Request::Message {
                    room: "r".into(),
                    to: None,
                    data: Value::Null
                }
            )
        );
        let e = ServerFrame {
            seq: Some(1),
            reply_to: None,
            event: ServerEvent::CallEnded {
                call: "c".into(),
                reason: CallEndReason::AnsweredElsewhere,
            },
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"seq":1,"type":"call_ended","call":"c","reason":"answered_elsewhere"}"#
        );
        assert_eq!(
            serde_json::to_value(ErrorCode::RateLimited).unwrap(),
            json!("rate_limited")
        );
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"join"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"ping","id":1.5}"#).is_err());
    }

    #[test]
    fn media_spellings() {
        let join = ClientFrame::new(Request::Join {
            room: "r".into(),
            meta: None,
            media: Some(MediaKind::Sfu),
        });
        assert_eq!(
            serde_json::to_string(&join).unwrap(),
            r#"{"type":"join","room":"r","media":"sfu"}"#
        );
        let plain: ClientFrame = serde_json::from_str(r#"{"type":"join","room":"r"}"#).unwrap();
        assert!(matches!(plain.request, Request::Join { media: None, .. }));
        assert!(
            serde_json::from_str::<ClientFrame>(r#"{"type":"join","room":"r","media":"p2p"}"#)
                .is_err()
        );
        // `joined` always says the kind; a frame without it is a mesh room's.
        let joined = ServerFrame {
            seq: Some(1),
            reply_to: None,
            event: ServerEvent::Joined {
                room: "r".into(),
                peer: "p".into(),
                peers: vec![],
                media: MediaKind::Mesh,
            },
        };
        assert_eq!(
            serde_json::to_string(&joined).unwrap(),
            r#"{"seq":1,"type":"joined","room":"r","peer":"p","peers":[],"media":"mesh"}"#
        );
        let old: ServerFrame =
            serde_json::from_str(r#"{"seq":1,"type":"joined","room":"r","peer":"p","peers":[]}"#)
                .unwrap();
        assert_eq!(old, joined);
        let media = ServerFrame {
            seq: Some(2),
            reply_to: None,
            event: ServerEvent::Media {
                room: "r".into(),
                data: json!({"kind":"answer","sdp":"v=0\r\n"}),
            },
        };
        assert_eq!(
            serde_json::to_string(&media).unwrap(),
            r#"{"seq":2,"type":"media","room":"r","data":{"kind":"answer","sdp":"v=0\r\n"}}"#
        );
        assert_eq!(MediaKind::default(), MediaKind::Mesh);
        assert_eq!(MediaKind::Sfu.to_string(), "sfu");
    }

    /// `fuzz/smoke.sh` (target `signal_client_frame`) found that this
    /// number did not survive parse → serialize → parse: serde_json's
    /// default float parsing is not correctly rounded.
    #[test]
    fn data_round_trips_numbers_and_key_order() {
        let text = r#"{"type":"message","room":"r","data":{"z":377777777777777700000000000000000000001731820631,"a":[0.30000000000000004,1e-7,-0.0]}}"#;
        let frame: ClientFrame = serde_json::from_str(text).unwrap();
        let again: ClientFrame =
            serde_json::from_str(&serde_json::to_string(&frame).unwrap()).unwrap();
        assert_eq!(again, frame);
        let Request::Message { data, .. } = &frame.request else {
            panic!("{frame:?}");
        };
        let keys: Vec<&str> = data
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["z", "a"]);
    }
}
