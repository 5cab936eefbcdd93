//! The classic face (PROTOCOL.md §2): socket.io events in and out, sharing
//! rooms with native peers. No seq, no replay: a disconnect is final.
//!
//! Arguments travel as JSON text, never as parsed values: a relayed `data`
//! reaches its peers as the very text the sender wrote, key order and number
//! spelling included, whichever face sent it and whichever receives it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::ser::{Serialize, SerializeTuple, Serializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use switchboard_signal_proto::ErrorCode;

use crate::clustered::Reply;
use crate::outbox::Data;
use crate::presence::{JoinKind, JoinOutcome};
use crate::session::Sid;
use crate::{ClassicEvent, Face, Refusal, SignalCore};

/// One argument of an incoming classic event. The shell passes the raw JSON
/// text of each argument (`&RawValue`, cut out of the packet without parsing
/// it); tests may pass parsed values.
pub trait ClassicArg {
    /// The argument as a string, when it is a JSON string.
    fn as_str(&self) -> Option<Cow<'_, str>>;
    /// The argument's JSON text.
    fn json(&self) -> Cow<'_, str>;
}

impl ClassicArg for &RawValue {
    fn as_str(&self) -> Option<Cow<'_, str>> {
        if !self.get().starts_with('"') {
            return None;
        }
        serde_json::from_str(self.get()).ok()
    }

    fn json(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.get())
    }
}

impl ClassicArg for Value {
    fn as_str(&self) -> Option<Cow<'_, str>> {
        Value::as_str(self).map(Cow::Borrowed)
    }

    fn json(&self) -> Cow<'_, str> {
        Cow::Owned(self.to_string())
    }
}

/// The arguments of an outgoing classic event, each as the JSON text it is
/// sent as. Shared: every recipient of a room event gets the same one, so
/// a fan-out copies a pointer per recipient, not the payload.
#[derive(Clone)]
pub struct ClassicArgs(Arc<[Box<RawValue>]>);

impl ClassicArgs {
    fn new(args: Vec<Box<RawValue>>) -> Self {
        ClassicArgs(args.into())
    }

    /// `[room, id]`, the shape of most events.
    pub(crate) fn strs(a: &str, b: &str) -> Self {
        ClassicArgs::new(vec![string_arg(a), string_arg(b)])
    }

    /// `[room, data]`: `data` is JSON text that came out of a parser.
    pub(crate) fn message(room: &str, data: &str) -> Self {
        let data =
            RawValue::from_string(data.to_owned()).unwrap_or_else(|_| RawValue::NULL.to_owned());
        ClassicArgs::new(vec![string_arg(room), data])
    }

    pub(crate) fn values(args: &[Value]) -> Self {
        ClassicArgs::new(
            args.iter()
                .map(|v| {
                    serde_json::value::to_raw_value(v).unwrap_or_else(|_| RawValue::NULL.to_owned())
                })
                .collect(),
        )
    }

    /// How many arguments.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each argument's JSON text, in order.
    pub fn iter(&self) -> impl Iterator<Item = &RawValue> {
        self.0.iter().map(AsRef::as_ref)
    }

    /// The arguments parsed (for tests and logs: the wire uses the text).
    #[must_use]
    pub fn to_values(&self) -> Vec<Value> {
        self.iter()
            .map(|a| serde_json::from_str(a.get()).unwrap_or(Value::Null))
            .collect()
    }
}

fn string_arg(s: &str) -> Box<RawValue> {
    // A &str always serializes.
    serde_json::value::to_raw_value(s).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

impl PartialEq for ClassicArgs {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .zip(other.iter())
                .all(|(a, b)| a.get() == b.get())
    }
}

impl fmt::Debug for ClassicArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(RawValue::get))
            .finish()
    }
}

/// As a tuple: Socket.IO sends a tuple's elements as separate arguments.
impl Serialize for ClassicArgs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.len())?;
        for arg in self.iter() {
            tuple.serialize_element(arg)?;
        }
        tuple.end()
    }
}

fn error_object(e: &Refusal) -> Value {
    json!({"code": e.code.as_str(), "message": e.message})
}

fn room_arg<A: ClassicArg>(args: &[A]) -> Result<Cow<'_, str>, Refusal> {
    args.first().and_then(ClassicArg::as_str).ok_or_else(|| {
        Refusal::new(
            ErrorCode::BadRequest,
            "the first argument must be the room name",
        )
    })
}

impl SignalCore {
    /// Runs one classic event; returns the ack payload (used when asked).
    pub(crate) fn classic_event<A: ClassicArg>(
        &mut self,
        now: Instant,
        sid: Sid,
        event: &str,
        args: &[A],
        ack: bool,
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
        // A clustered core answers every ack through `Output::ClassicReply`,
        // in the order the events came: some wait for the store.
        let ticket = if ack { self.classic_ticket(sid) } else { None };
        let reply = Reply::Classic(ticket);
        let result = if allowed {
            self.classic_request(now, sid, event, args, reply.clone())
        } else {
            Err(Refusal::new(
                ErrorCode::RateLimited,
                "too many requests; slow down",
            ))
        };
        let payload = match result {
            Ok(Some(ack)) => ack,
            Ok(None) => return Value::Null,
            Err(e) => {
                self.counters.error(e.code);
                let object = error_object(&e);
                self.emit(
                    sid,
                    "error",
                    ClassicArgs::values(std::slice::from_ref(&object)),
                );
                let mut ack = object;
                if event == "message"
                    && let Some(map) = ack.as_object_mut()
                {
                    map.insert("delivered".into(), Value::from(0));
                }
                ack
            }
        };
        if ticket.is_some() {
            self.classic_ready(sid, ticket, payload);
            return Value::Null;
        }
        payload
    }

    /// Runs one event: `Some(ack payload)` now, or `None` when a clustered
    /// core answers it later through `reply`.
    fn classic_request<A: ClassicArg>(
        &mut self,
        now: Instant,
        sid: Sid,
        event: &str,
        args: &[A],
        reply: Reply,
    ) -> Result<Option<Value>, Refusal> {
        let peer = |core: &Self| {
            core.sessions
                .get(&sid)
                .map_or_else(String::new, |s| s.peer.to_string())
        };
        match event {
            "join" => {
                let room = room_arg(args)?;
                // No way to ask for a kind here: a room made by a classic
                // join gets `rooms.media` (see `MediaOutput` for what a
                // classic peer of an SFU room gets).
                let outcome = self.join(now, sid, &room, None, None, JoinKind::Request, reply)?;
                let id = peer(self);
                let (name, ack) = match outcome {
                    JoinOutcome::Joined(_) => ("joined", json!({"ok": true})),
                    JoinOutcome::Full => ("full", json!({"full": true})),
                    JoinOutcome::Pending => return Ok(None),
                };
                self.emit(sid, name, ClassicArgs::strs(&room, &id));
                Ok(Some(ack))
            }
            "leave" => {
                let room = room_arg(args)?;
                self.leave(sid, &room)?;
                let id = peer(self);
                self.emit(sid, "leaved", ClassicArgs::strs(&room, &id));
                Ok(Some(json!({"ok": true})))
            }
            "message" => {
                let room = room_arg(args)?;
                // The sender's text, relayed as it is to both faces.
                let raw = args.get(1).map_or(Cow::Borrowed("null"), ClassicArg::json);
                if raw.len() > self.config.max_message_bytes {
                    return Err(Refusal::new(
                        ErrorCode::TooLarge,
                        format!("data over {} bytes", self.config.max_message_bytes),
                    ));
                }
                if self.cluster.is_some() {
                    self.cluster_message(now, sid, &room, None, Data { raw: &raw }, reply)?;
                    return Ok(None);
                }
                let delivered = self.message(sid, &room, None, Data { raw: &raw })?.count;
                Ok(Some(json!({ "delivered": delivered })))
            }
            other => Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("unknown event {other:?}; use join, message or leave"),
            )),
        }
    }

    fn emit(&mut self, sid: Sid, event: &'static str, args: ClassicArgs) {
        if let Some(s) = self.sessions.get(&sid) {
            self.outbox.classic(s, ClassicEvent { event, args });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::value::RawValue;

    use crate::{Config, ConnId, Face, Identity, Output, SignalCore};

    /// Key order, number spellings no f64 keeps (the fuzz case of issue
    /// #12 among them), escapes and spacing: a peer gets this text as is.
    const DATA: &str = r#"{"z":1,"a":{"y":377777777777777700000000000000000000001731820631,"b":[1.0,1e400,-0,0.1000000000000000055511151231257827]},"m":"\u00e9\ud83d\ude00",  "k" : null}"#;

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).expect("valid JSON")
    }

    struct Core {
        core: SignalCore,
        now: Instant,
    }

    impl Core {
        fn new() -> Self {
            Core {
                core: SignalCore::new(Config::default(), [7; 32]),
                now: Instant::now(),
            }
        }

        fn connect(&mut self, n: u64, face: Face) -> ConnId {
            let conn = ConnId(n);
            self.core
                .connect(self.now, conn, Identity::default(), face, |_| Vec::new());
            self.drain();
            conn
        }

        fn classic(&mut self, conn: ConnId, event: &str, args: &[&RawValue]) -> Option<String> {
            let ack = self.core.handle_classic(self.now, conn, event, args, true);
            ack.map(|v| v.to_string())
        }

        fn drain(&mut self) -> Vec<Output> {
            std::iter::from_fn(|| self.core.poll_output()).collect()
        }
    }

    fn frame_text(out: &Output) -> Option<String> {
        match out {
            Output::Frame { frame, .. } => {
                let mut wire = Vec::new();
                frame.write_to(&mut wire);
                Some(String::from_utf8(wire).expect("utf-8"))
            }
            _ => None,
        }
    }

    #[test]
    fn classic_data_reaches_both_faces_as_its_text() {
        let mut c = Core::new();
        let sender = c.connect(1, Face::Classic);
        let classic = c.connect(2, Face::Classic);
        let native = c.connect(3, Face::Native);
        for conn in [sender, classic] {
            c.classic(conn, "join", &[raw(r#""r""#)]);
        }
        c.core
            .handle_text(c.now, native, r#"{"type":"join","room":"r"}"#);
        c.drain();

        let ack = c.classic(sender, "message", &[raw(r#""r""#), raw(DATA)]);
        assert_eq!(ack.as_deref(), Some(r#"{"delivered":2}"#));
        let out = c.drain();
        let to_classic = out
            .iter()
            .find_map(|o| match o {
                Output::Classic { conn, event } if *conn == classic => Some(event),
                _ => None,
            })
            .expect("a classic message");
        assert_eq!(to_classic.event, "message");
        let texts: Vec<&str> = to_classic.args.iter().map(RawValue::get).collect();
        assert_eq!(texts, [r#""r""#, DATA]);
        let to_native = out.iter().find_map(frame_text).expect("a native frame");
        assert!(
            to_native.ends_with(&format!(r#","data":{DATA}}}"#)),
            "{to_native}"
        );
    }

    #[test]
    fn native_data_reaches_classic_peers_as_its_text() {
        let mut c = Core::new();
        let native = c.connect(1, Face::Native);
        let classic = c.connect(2, Face::Classic);
        c.classic(classic, "join", &[raw(r#""r""#)]);
        c.core
            .handle_text(c.now, native, r#"{"type":"join","room":"r"}"#);
        c.drain();
        let frame = format!(r#"{{"type":"message","room":"r","data":{DATA}}}"#);
        c.core.handle_text(c.now, native, &frame);
        let out = c.drain();
        let event = out
            .iter()
            .find_map(|o| match o {
                Output::Classic { conn, event } if *conn == classic => Some(event),
                _ => None,
            })
            .expect("a classic message");
        assert_eq!(event.args.iter().nth(1).map(RawValue::get), Some(DATA));
    }

    #[test]
    fn args_serialize_as_a_tuple_of_their_texts() {
        let args = super::ClassicArgs::message("r", DATA);
        let text = serde_json::to_string(&args).expect("serializes");
        assert_eq!(text, format!(r#"["r",{DATA}]"#));
    }
}
