//! What the server runs on a Socket.IO client's bytes, end to end: Engine.IO (v4) packets
//! from a long-polling body (`engineioxide_core::payload::decoder`) or from WebSocket text
//! and binary messages (`Packet::parse`), then the Socket.IO common parser
//! (`CommonParser::decode_str` / `decode_bin`, with the attachment state across messages),
//! then what `crates/switchboard/src/socketio.rs` does with an event: its arguments as JSON
//! (a copy of `event_args`, which is private there) into `SignalCore::handle_classic` on a
//! connection that shares rooms with a classic and a native peer.
//!
//! Checked: no panic anywhere on the path; every frame and event the core sends in return
//! serializes (native frames parse as JSON objects), and an ack comes exactly when asked.
#![no_main]

use serde_json::value::RawValue;

#[path = "../common/input.rs"]
mod input;

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use engineioxide_core::{Packet as EioPacket, ProtocolVersion, Str};
use futures_core::Stream;
use http_body_util::Full;
use input::Input;
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;
use socketioxide_core::Value;
use socketioxide_core::packet::{Packet, PacketData};
use socketioxide_core::parser::{Parse, ParseConfig, ParserState};
use socketioxide_parser_common::CommonParser;
use switchboard_signal::{Config, ConnId, Face, Identity, Output, SignalCore};

/// engineioxide's default `max_payload`, which switchboard keeps.
const MAX_PAYLOAD: u64 = 100_000;
const CLIENT: ConnId = ConnId(1);
const MAX_MESSAGES: usize = 64;

/// Polls a stream without an async runtime: the body is in memory, so it is never pending.
fn poll_stream<S: Stream + ?Sized>(stream: Pin<&mut S>) -> Option<S::Item> {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_next(&mut cx) {
        Poll::Ready(item) => item,
        Poll::Pending => panic!("an in-memory body is never pending"),
    }
}

struct Harness {
    core: SignalCore,
    now: Instant,
    config: ParseConfig,
    state: ParserState,
}

impl Harness {
    fn new() -> Self {
        let now = Instant::now();
        let mut core = SignalCore::new(Config::default(), [3; 32]);
        // The fuzzed client, a classic and a native peer already in the rooms it may name.
        core.connect(now, CLIENT, Identity::default(), Face::Classic, |_| {
            Vec::new()
        });
        core.connect(now, ConnId(2), Identity::default(), Face::Classic, |_| {
            Vec::new()
        });
        core.connect(now, ConnId(3), Identity::default(), Face::Native, |_| {
            Vec::new()
        });
        for room in ["r0", "lobby"] {
            let _ = core.handle_classic(now, ConnId(2), "join", &[Json::from(room)], false);
            core.handle_text(
                now,
                ConnId(3),
                &format!(r#"{{"type":"join","room":"{room}"}}"#),
            );
        }
        let mut h = Harness {
            core,
            now,
            config: ParseConfig::default(),
            state: ParserState::default(),
        };
        h.drain();
        h
    }

    /// One Engine.IO packet, as engineioxide hands it to socketioxide.
    fn engineio(&mut self, packet: EioPacket) {
        let parsed = match packet {
            EioPacket::Message(text) => CommonParser.decode_str(&self.config, &self.state, text),
            EioPacket::Binary(data) => CommonParser.decode_bin(&self.config, &self.state, data),
            _ => return,
        };
        if let Ok(packet) = parsed {
            self.socketio(packet);
        }
    }

    /// One Socket.IO packet: events go to the core the way socketio.rs sends them.
    fn socketio(&mut self, packet: Packet) {
        let (PacketData::Event(v, ack) | PacketData::BinaryEvent(v, ack)) = packet.inner else {
            return;
        };
        let Ok((event, args)) = event_args(&v) else {
            return;
        };
        let reply = self
            .core
            .handle_classic(self.now, CLIENT, &event, &args, ack.is_some());
        assert_eq!(reply.is_some(), ack.is_some(), "an ack exactly when asked");
        if let Some(reply) = reply {
            serde_json::to_string(&reply).expect("an ack serializes");
        }
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Frame { frame, .. } => {
                    let mut text = Vec::new();
                    frame.write_to(&mut text);
                    let v: Json = serde_json::from_slice(&text).unwrap_or_else(|e| {
                        panic!(
                            "frame is not JSON ({e}): {}",
                            String::from_utf8_lossy(&text)
                        )
                    });
                    assert!(v.get("type").is_some_and(Json::is_string), "{v}");
                }
                Output::Classic { event, .. } => {
                    serde_json::to_string(&event.args).expect("classic arguments serialize");
                }
                Output::Close { .. } => {}
                // SFU rooms: what the media relay would get; nothing to check here.
                Output::Media(_) => {}
                Output::Backplane(_) | Output::ClassicReply { .. } => {
                    panic!("a node alone has no backplane")
                }
            }
        }
        while self.core.poll_event().is_some() {}
    }
}

/// A copy of `event_args` in crates/switchboard/src/socketio.rs (private there): the
/// event's name and its arguments as their JSON text; binary attachments are refused.
fn event_args(v: &Value) -> Result<(String, Vec<&RawValue>), ()> {
    let text = match v {
        Value::Str(text, None) => text,
        Value::Str(text, Some(bins)) if bins.is_empty() => text,
        _ => return Err(()),
    };
    let mut args: Vec<&RawValue> = serde_json::from_str(text).map_err(|_| ())?;
    let first = match args.first() {
        Some(first) if first.get().starts_with('"') => *first,
        _ => return Err(()),
    };
    let name: String = serde_json::from_str(first.get()).map_err(|_| ())?;
    args.remove(0);
    Ok((name, args))
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let mut h = Harness::new();
    if inp.u8() & 1 == 0 {
        // HTTP long-polling: the rest of the input is one POST body.
        let body = inp.rest();
        let rounds = body.len() + 1;
        let body = Full::new(Bytes::copy_from_slice(body));
        let stream =
            engineioxide_core::payload::decoder(body, None, ProtocolVersion::V4, MAX_PAYLOAD);
        let mut stream = std::pin::pin!(stream);
        // Every packet but the last ends with a separator byte: bounded by the body length.
        for _ in 0..rounds {
            match poll_stream(stream.as_mut()) {
                Some(Ok(packet)) => h.engineio(packet),
                Some(Err(_)) => break,
                None => break,
            }
        }
    } else {
        // WebSocket: a sequence of text and binary messages.
        for _ in 0..MAX_MESSAGES {
            if inp.is_empty() {
                break;
            }
            let binary = inp.u8().is_multiple_of(4);
            let bytes = inp.long_bytes(4096);
            if binary {
                h.engineio(EioPacket::Binary(Bytes::copy_from_slice(bytes)));
            } else if let Ok(text) = std::str::from_utf8(bytes)
                && let Ok(packet) =
                    EioPacket::parse(ProtocolVersion::V4, Str::from(text.to_owned()))
            {
                h.engineio(packet);
            }
        }
    }
});
