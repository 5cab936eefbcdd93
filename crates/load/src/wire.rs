//! Just enough of the three wire protocols to join a room, send, and
//! recognise what comes back.
//!
//! The payload carries its own send time and sender: `data` is a JSON string
//! of exactly the configured size that starts with
//! `@T<20-digit nanoseconds>@S<10-digit sender>@`, padded with `x`. The
//! receivers find it by that marker without parsing the frame, so the load
//! tool spends its CPU on sending and receiving rather than on JSON.

use std::fmt::Write as _;

use serde_json::Value;

/// Which server dialect to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// PROTOCOL.md §1: JSON over WebSocket at `/ws`.
    Native,
    /// Socket.IO v5 over Engine.IO v4, websocket transport only, the classic events.
    Socketio,
    /// The bare relay (`bench/bare-relay`): native join and message shapes, nothing else.
    Bare,
}

impl Protocol {
    /// Path and query to use when the URL names none.
    pub fn default_path(self) -> &'static str {
        match self {
            Protocol::Native => "/ws",
            Protocol::Socketio => "/socket.io/?EIO=4&transport=websocket",
            Protocol::Bare => "/",
        }
    }
}

const MARKER_TIME: &str = "@T";
const MARKER_SENDER: &str = "@S";
const TIME_DIGITS: usize = 20;
const SENDER_DIGITS: usize = 10;
/// Length of `@T<time>@S<sender>@`, the smallest payload.
pub const PAYLOAD_HEADER_LEN: usize = 2 + TIME_DIGITS + 2 + SENDER_DIGITS + 1;

/// Builds the frames one peer sends. Owns the room name and the padding so a
/// send only formats numbers.
#[derive(Debug, Clone)]
pub struct Encoder {
    protocol: Protocol,
    room: String,
    padding: String,
}

impl Encoder {
    /// `data_size` is the length of the `data` string; sizes below
    /// [`PAYLOAD_HEADER_LEN`] are raised to it.
    pub fn new(protocol: Protocol, room: &str, data_size: usize) -> Self {
        Self {
            protocol,
            room: json_string(room),
            padding: "x".repeat(data_size.saturating_sub(PAYLOAD_HEADER_LEN)),
        }
    }

    /// The join request.
    pub fn join(&self) -> String {
        match self.protocol {
            Protocol::Native | Protocol::Bare => {
                format!(r#"{{"type":"join","room":{}}}"#, self.room)
            }
            Protocol::Socketio => format!(r#"42["join",{}]"#, self.room),
        }
    }

    /// A message to the whole room. `id` asks for an acknowledgement (native
    /// `id`, Socket.IO ack id); the bare relay has none and ignores it.
    pub fn message(&self, sent_at_ns: u64, sender: usize, id: Option<u64>) -> String {
        let mut out = String::with_capacity(self.padding.len() + PAYLOAD_HEADER_LEN + 64);
        let data_start = |out: &mut String| {
            let _ = write!(
                out,
                "\"{MARKER_TIME}{sent_at_ns:0TIME_DIGITS$}{MARKER_SENDER}{sender:0SENDER_DIGITS$}@{}\"",
                self.padding
            );
        };
        match self.protocol {
            Protocol::Native => {
                out.push_str(r#"{"type":"message","room":"#);
                out.push_str(&self.room);
                if let Some(id) = id {
                    let _ = write!(out, r#","id":{id}"#);
                }
                out.push_str(r#","data":"#);
                data_start(&mut out);
                out.push('}');
            }
            Protocol::Bare => {
                out.push_str(r#"{"type":"message","room":"#);
                out.push_str(&self.room);
                out.push_str(r#","data":"#);
                data_start(&mut out);
                out.push('}');
            }
            Protocol::Socketio => {
                out.push_str("42");
                if let Some(id) = id {
                    let _ = write!(out, "{id}");
                }
                out.push_str(r#"["message","#);
                out.push_str(&self.room);
                out.push(',');
                data_start(&mut out);
                out.push(']');
            }
        }
        out
    }
}

/// A native `ping` confirming every frame up to `last_seq` (PROTOCOL.md §1):
/// the server then forgets them, as the SDK makes it do.
pub fn confirm(last_seq: u64) -> String {
    format!(r#"{{"type":"ping","last_seq":{last_seq}}}"#)
}

/// The `seq` of a native server frame, read from the `{"seq":N,` the
/// server writes first, without parsing the frame.
pub fn native_seq(text: &str) -> Option<u64> {
    let rest = text.strip_prefix(r#"{"seq":"#)?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

fn json_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// What a received text frame means to the load tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A benchmark message relayed from `sender`, sent at `sent_at_ns`.
    Delivery {
        /// Send time, nanoseconds since the run's base instant.
        sent_at_ns: u64,
        /// Global index of the sending peer.
        sender: usize,
    },
    /// The server acknowledged one of our messages.
    Ack,
    /// Native `welcome`.
    Welcome,
    /// Our join succeeded.
    Joined,
    /// The room is at capacity.
    Full,
    /// Engine.IO open packet (`0{...}`).
    EngineOpen,
    /// Socket.IO connect acknowledgement (`40{...}`).
    SocketConnected,
    /// Engine.IO ping: must be answered with [`ENGINE_PONG`].
    EnginePing,
    /// An error from the server, as text for the report.
    Error(String),
    /// Anything else (other peers joining or leaving, pongs, ...).
    Other,
}

/// Engine.IO pong, the answer to a server ping.
pub const ENGINE_PONG: &str = "3";
/// Socket.IO connect to the default namespace.
pub const SOCKET_CONNECT: &str = "40";

/// Classifies one received text frame.
pub fn classify(protocol: Protocol, text: &str) -> Incoming {
    if let Some(delivery) = find_delivery(text) {
        return delivery;
    }
    match protocol {
        Protocol::Native | Protocol::Bare => classify_native(text),
        Protocol::Socketio => classify_socketio(text),
    }
}

fn find_delivery(text: &str) -> Option<Incoming> {
    let start = text.find(MARKER_TIME)? + MARKER_TIME.len();
    let time = text.get(start..start + TIME_DIGITS)?;
    let rest = text.get(start + TIME_DIGITS..)?;
    let sender = rest.strip_prefix(MARKER_SENDER)?.get(..SENDER_DIGITS)?;
    Some(Incoming::Delivery {
        sent_at_ns: time.parse().ok()?,
        sender: sender.parse().ok()?,
    })
}

fn classify_native(text: &str) -> Incoming {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Incoming::Other;
    };
    match value.get("type").and_then(Value::as_str) {
        Some("ack") => Incoming::Ack,
        Some("welcome") => Incoming::Welcome,
        Some("joined") => Incoming::Joined,
        Some("full") => Incoming::Full,
        Some("error") => Incoming::Error(text.to_owned()),
        _ => Incoming::Other,
    }
}

fn classify_socketio(text: &str) -> Incoming {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some('0'), _) => Incoming::EngineOpen,
        (Some('2'), _) => Incoming::EnginePing,
        (Some('4'), Some('0')) => Incoming::SocketConnected,
        (Some('4'), Some('3')) => Incoming::Ack,
        (Some('4'), Some('4')) => Incoming::Error(text.to_owned()),
        (Some('4'), Some('2')) => {
            // `42` then an optional ack id, then the JSON array of the event.
            let body = text[2..].trim_start_matches(|c: char| c.is_ascii_digit());
            let Ok(Value::Array(args)) = serde_json::from_str::<Value>(body) else {
                return Incoming::Other;
            };
            match args.first().and_then(Value::as_str) {
                Some("joined") => Incoming::Joined,
                Some("full") => Incoming::Full,
                Some("error") => Incoming::Error(text.to_owned()),
                _ => Incoming::Other,
            }
        }
        (Some('1'), _) => Incoming::Error("engine.io close".to_owned()),
        _ => Incoming::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_read_the_seq_cheaply() {
        assert_eq!(native_seq(r#"{"seq":42,"type":"message"}"#), Some(42));
        assert_eq!(native_seq(r#"{"type":"welcome"}"#), None);
        assert_eq!(native_seq(r#"{"seq":"#), None);
        let ping: Value = serde_json::from_str(&confirm(7)).expect("json");
        assert_eq!(ping, serde_json::json!({"type":"ping","last_seq":7}));
    }

    #[test]
    fn native_message_round_trip() {
        let enc = Encoder::new(Protocol::Native, "room \"1\"", 300);
        let frame = enc.message(123_456_789, 42, Some(7));
        let value: Value = serde_json::from_str(&frame).expect("valid json");
        assert_eq!(value["type"], "message");
        assert_eq!(value["room"], "room \"1\"");
        assert_eq!(value["id"], 7);
        assert_eq!(value["data"].as_str().map(str::len), Some(300));
        let relayed = format!(
            r#"{{"type":"message","room":"room \"1\"","from":"p","seq":3,"data":{}}}"#,
            value["data"]
        );
        assert_eq!(
            classify(Protocol::Native, &relayed),
            Incoming::Delivery {
                sent_at_ns: 123_456_789,
                sender: 42
            }
        );
    }

    #[test]
    fn socketio_frames() {
        let enc = Encoder::new(Protocol::Socketio, "r1", 10);
        assert_eq!(enc.join(), r#"42["join","r1"]"#);
        let with_ack = enc.message(5, 1, Some(9));
        assert!(with_ack.starts_with(r#"429["message","r1",""#));
        let body = with_ack.trim_start_matches(|c: char| c.is_ascii_digit());
        let args: Value = serde_json::from_str(body).expect("valid json");
        assert_eq!(args[2].as_str().map(str::len), Some(PAYLOAD_HEADER_LEN));
        assert_eq!(
            classify(Protocol::Socketio, r#"0{"sid":"a","pingInterval":25000}"#),
            Incoming::EngineOpen
        );
        assert_eq!(
            classify(Protocol::Socketio, r#"40{"sid":"b"}"#),
            Incoming::SocketConnected
        );
        assert_eq!(classify(Protocol::Socketio, "2"), Incoming::EnginePing);
        assert_eq!(
            classify(Protocol::Socketio, r#"42["joined","r1","id"]"#),
            Incoming::Joined
        );
        assert_eq!(
            classify(Protocol::Socketio, r#"431[{"delivered":1}]"#),
            Incoming::Ack
        );
    }

    #[test]
    fn native_replies() {
        assert_eq!(
            classify(
                Protocol::Native,
                r#"{"seq":2,"type":"ack","delivered":1,"reply_to":3}"#
            ),
            Incoming::Ack
        );
        assert_eq!(
            classify(Protocol::Bare, r#"{"type":"joined"}"#),
            Incoming::Joined
        );
        assert_eq!(classify(Protocol::Native, "not json"), Incoming::Other);
        assert_eq!(classify(Protocol::Native, "@Tshort"), Incoming::Other);
    }
}
