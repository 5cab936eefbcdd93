//! The server's real signaling core (`switchboard_signal::SignalCore`, not only signal-proto's
//! `ClientFrame`) driven by a script of operations on a few connections, in virtual time:
//! connects on both faces, native text frames (built from templates with fuzzed fields, or
//! raw bytes), classic socket.io events, binary frames, disconnects, resumes and timers.
//!
//! Checked after every operation:
//! - no panic;
//! - every native frame is a JSON object (numbers of any size allowed) with a string `type`,
//!   and its `seq` field is the frame's seq;
//! - on one connection, `seq` grows by exactly 1; a connection that resumed with `last_seq`
//!   continues at `last_seq + 1`;
//! - a replayed frame is byte-identical to the first sending of that seq in that session;
//! - every classic event's arguments and every ack serialize to JSON;
//! - a native sender's message `data` reaches native peers as the same text, and classic
//!   peers as the same value (issue #12 item 13).
#![no_main]

#[path = "../common/input.rs"]
mod input;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use input::Input;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;
use switchboard_signal::{Config, ConnId, Disconnect, Face, Identity, Output, SignalCore};

const SLOTS: usize = 4;
const ROOMS: [&str; 3] = ["r0", "r1", "lobby"];
const USERS: [&str; 2] = ["alice", "bob"];
const CLASSIC_EVENTS: [&str; 4] = ["join", "message", "leave", "ping"];
/// Operations per input: enough for joins, traffic, drops and resumes; few enough that one
/// run stays fast.
const MAX_OPS: usize = 200;

/// One client: its current connection, and what it learned from its latest `welcome`.
#[derive(Default)]
struct Slot {
    conn: Option<ConnId>,
    face: Option<Face>,
    /// Session id and resume token.
    session: Option<(String, String)>,
    /// The highest seq this client has seen, as a resume's `last_seq`.
    last_seq: u64,
    /// Its peer id, from `welcome` or `resumed`.
    peer: Option<String>,
}

struct Harness {
    core: SignalCore,
    now: Instant,
    next_conn: u64,
    slots: [Slot; SLOTS],
    /// Per connection: the seq of its last frame.
    seq: HashMap<ConnId, u64>,
    /// Per resumed connection: the seq its first frame must carry.
    expect_first: HashMap<ConnId, u64>,
    /// Per connection: its session id (from `welcome` or `resumed`).
    conn_session: HashMap<ConnId, String>,
    /// Per session id: each seq's body as first sent.
    sent: HashMap<String, HashMap<u64, Vec<u8>>>,
    /// Peer ids and call ids seen in frames, for requests that name one.
    peers: Vec<String>,
    calls: Vec<String>,
    /// Connections the core asked to close; the harness then reports them gone.
    closing: Vec<ConnId>,
    /// Connections open as far as the harness knows, slot or not.
    live: BTreeSet<ConnId>,
    /// The `data` text of the message request being handled, if it is one.
    sent_data: Option<String>,
    /// `(from, data text)` of every native `message` frame of the current step.
    relayed: Vec<(String, String)>,
    /// The `data` of every classic `message` event of the current step.
    relayed_classic: Vec<String>,
}

// The struct update keeps this compiling when the core's config grows a field.
#[allow(clippy::needless_update)]
fn tight_config() -> Config {
    // Small limits so that a short script reaches the paths behind them: full rooms, the
    // room cap, oversized frames, the rate limit, replay eviction, grace and ring timers.
    Config {
        max_peers: 3,
        max_rooms_per_session: 2,
        max_message_bytes: 300,
        rate_per_sec: 5,
        rate_burst: 10,
        resume_grace: Duration::from_secs(5),
        replay_frames: 6,
        replay_bytes: 600,
        ring_timeout: Duration::from_secs(3),
        ..Config::default()
    }
}

impl Harness {
    fn new(tight: bool) -> Self {
        let config = if tight {
            tight_config()
        } else {
            Config::default()
        };
        Harness {
            core: SignalCore::new(config, [7; 32]),
            now: Instant::now(),
            next_conn: 0,
            slots: Default::default(),
            seq: HashMap::new(),
            expect_first: HashMap::new(),
            conn_session: HashMap::new(),
            sent: HashMap::new(),
            peers: Vec::new(),
            calls: Vec::new(),
            closing: Vec::new(),
            live: BTreeSet::new(),
            sent_data: None,
            relayed: Vec::new(),
            relayed_classic: Vec::new(),
        }
    }

    fn fresh_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    /// A new connection number, or (sometimes) a live one reused: the core must treat the
    /// old connection as gone.
    fn conn_for(&mut self, inp: &mut Input<'_>, slot: usize) -> ConnId {
        match (inp.u8() % 8, self.slots[slot].conn) {
            (0, Some(old)) => old,
            (1, _) if self.next_conn > 0 => ConnId(1 + inp.u8() as u64 % self.next_conn),
            _ => self.fresh_conn(),
        }
    }

    fn forget_conn(&mut self, conn: ConnId) {
        self.seq.remove(&conn);
        self.expect_first.remove(&conn);
        self.conn_session.remove(&conn);
        self.live.remove(&conn);
        for s in &mut self.slots {
            if s.conn == Some(conn) {
                s.conn = None;
            }
        }
    }

    fn identity(&self, inp: &mut Input<'_>) -> Identity {
        let b = inp.u8();
        Identity {
            user: match b % 3 {
                0 => None,
                n => Some(USERS[usize::from(n) - 1].to_owned()),
            },
            name: (b & 4 != 0).then(|| "N".to_owned()),
            rooms: (b & 8 != 0).then(|| vec![ROOMS[0].to_owned()]),
            source_ip: (b & 16 != 0).then(|| std::net::Ipv4Addr::new(192, 0, 2, b >> 5).into()),
        }
    }

    fn room(&self, inp: &mut Input<'_>) -> String {
        match inp.u8() % 8 {
            0 => inp.text(40),
            n => ROOMS[usize::from(n) % ROOMS.len()].to_owned(),
        }
    }

    fn peer(&self, inp: &mut Input<'_>) -> String {
        let b = usize::from(inp.u8());
        if b == 0 || self.peers.is_empty() {
            inp.text(30)
        } else {
            self.peers[b % self.peers.len()].clone()
        }
    }

    fn call_id(&self, inp: &mut Input<'_>) -> String {
        let b = usize::from(inp.u8());
        if b == 0 || self.calls.is_empty() {
            inp.text(30)
        } else {
            self.calls[b % self.calls.len()].clone()
        }
    }

    /// A JSON value as text: raw fuzz bytes (often not JSON at all), or well-formed values
    /// with fuzzed contents.
    fn json(&self, inp: &mut Input<'_>) -> String {
        match inp.u8() % 6 {
            0 => inp.text(200),
            1 => Value::from(inp.text(200)).to_string(),
            2 => inp.u32().to_string(),
            3 => format!(r#"{{"kind":"offer","sdp":{}}}"#, Value::from(inp.text(200))),
            4 => "null".to_owned(),
            _ => format!("[{},{}]", inp.u16(), Value::from(inp.text(20))),
        }
    }

    fn request_id(inp: &mut Input<'_>) -> String {
        match inp.u8() % 4 {
            0 => String::new(),
            1 => format!(r#","id":{}"#, Value::from(inp.text(10))),
            2 => r#","id":null"#.to_owned(),
            _ => format!(r#","id":{}"#, inp.u8()),
        }
    }

    /// A native text frame from a template, with fuzzed fields.
    fn native_frame(&mut self, inp: &mut Input<'_>) -> String {
        let q = |s: &str| Value::from(s).to_string();
        let id = Self::request_id(inp);
        match inp.u8() % 9 {
            0 => {
                let room = self.room(inp);
                let meta = match inp.u8() % 3 {
                    0 => String::new(),
                    _ => format!(r#","meta":{}"#, self.json(inp)),
                };
                format!(r#"{{"type":"join","room":{}{meta}{id}}}"#, q(&room))
            }
            1 => format!(r#"{{"type":"leave","room":{}{id}}}"#, q(&self.room(inp))),
            2 | 3 => {
                let room = self.room(inp);
                let to = match inp.u8() % 3 {
                    0 => format!(r#","to":{}"#, q(&self.peer(inp))),
                    _ => String::new(),
                };
                let data = self.json(inp);
                self.sent_data = Some(data.clone());
                format!(
                    r#"{{"type":"message","room":{}{to},"data":{data}{id}}}"#,
                    q(&room)
                )
            }
            4 => match inp.u8() % 3 {
                0 => format!(r#"{{"type":"ping"{id}}}"#),
                _ => format!(r#"{{"type":"ping","last_seq":{}{id}}}"#, inp.u32()),
            },
            5 => {
                let to = match inp.u8() % 3 {
                    0 => inp.text(20),
                    n => USERS[usize::from(n) - 1].to_owned(),
                };
                format!(r#"{{"type":"call","to":{}{id}}}"#, q(&to))
            }
            6 => format!(
                r#"{{"type":"accept","call":{}{id}}}"#,
                q(&self.call_id(inp))
            ),
            7 => format!(
                r#"{{"type":"decline","call":{}{id}}}"#,
                q(&self.call_id(inp))
            ),
            _ => format!(
                r#"{{"type":"cancel","call":{}{id}}}"#,
                q(&self.call_id(inp))
            ),
        }
    }

    /// Classic event arguments: a template, or whatever JSON array the fuzz text holds.
    fn classic_args(&self, inp: &mut Input<'_>) -> Vec<Value> {
        match inp.u8() % 4 {
            0 => serde_json::from_str(&inp.text(200)).unwrap_or_default(),
            1 => vec![Value::from(self.room(inp))],
            2 => {
                let room = self.room(inp);
                let data = serde_json::from_str(&self.json(inp)).unwrap_or(Value::Null);
                vec![Value::from(room), data]
            }
            _ => vec![Value::from(u64::from(inp.u32())), Value::Null],
        }
    }

    fn step(&mut self, inp: &mut Input<'_>) {
        let slot = inp.pick(SLOTS);
        let now = self.now;
        self.sent_data = None;
        self.relayed.clear();
        self.relayed_classic.clear();
        match inp.u8() % 10 {
            0 => {
                let face = if inp.u8().is_multiple_of(4) {
                    Face::Classic
                } else {
                    Face::Native
                };
                let conn = self.conn_for(inp, slot);
                let identity = self.identity(inp);
                self.forget_conn(conn);
                self.core.connect(now, conn, identity, face, |_| Vec::new());
                self.live.insert(conn);
                self.slots[slot].conn = Some(conn);
                self.slots[slot].face = Some(face);
                self.slots[slot].last_seq = 0;
            }
            1 | 2 => {
                if let Some(conn) = self.slots[slot].conn {
                    let text = self.native_frame(inp);
                    self.core.handle_text(now, conn, &text);
                    self.drain();
                    self.check_relayed(slot);
                }
            }
            3 => {
                if let Some(conn) = self.slots[slot].conn {
                    let text = inp.text(400);
                    self.core.handle_text(now, conn, &text);
                }
            }
            4 => {
                if let Some(conn) = self.slots[slot].conn {
                    let event = match inp.u8() % 8 {
                        0 => inp.text(10),
                        n => CLASSIC_EVENTS[usize::from(n) % CLASSIC_EVENTS.len()].to_owned(),
                    };
                    let args = self.classic_args(inp);
                    let ack = inp.bool();
                    if let Some(reply) = self.core.handle_classic(now, conn, &event, &args, ack) {
                        assert!(ack, "an ack payload nobody asked for");
                        serde_json::to_string(&reply).expect("an ack serializes");
                    }
                }
            }
            5 => {
                if let Some(conn) = self.slots[slot].conn {
                    let how = if inp.bool() {
                        Disconnect::Clean
                    } else {
                        Disconnect::Abrupt
                    };
                    self.core.disconnect(now, conn, how);
                    self.forget_conn(conn);
                }
            }
            6 => self.resume(inp, slot),
            7 => {
                let by = match inp.u8() % 4 {
                    0 => Duration::from_secs(u64::from(inp.u8())),
                    _ => Duration::from_millis(u64::from(inp.u8()) * 20),
                };
                self.advance(by);
            }
            8 => {
                if let Some(conn) = self.slots[slot].conn {
                    self.core.handle_binary(now, conn);
                }
            }
            _ => {
                // Traffic and state on a connection the core never saw, or saw end.
                let conn = ConnId(u64::from(inp.u8()) % (self.next_conn + 2));
                let text = self.native_frame(inp);
                self.core.handle_text(now, conn, &text);
                let _ = self
                    .core
                    .handle_classic(now, conn, "join", &[Value::from("r0")], true);
            }
        }
        self.drain();
    }

    /// Issue #12 item 13: a native peer gets the `data` text a native sender sent, byte for
    /// byte (JSON whitespace around it aside); a classic peer gets the same JSON value, and
    /// never `null` for data that was not `null`.
    fn check_relayed(&mut self, slot: usize) {
        let sent = self.sent_data.take();
        let relayed = std::mem::take(&mut self.relayed);
        let relayed_classic = std::mem::take(&mut self.relayed_classic);
        let (Some(sent), Some(me)) = (sent, &self.slots[slot].peer) else {
            return;
        };
        let sent = sent.trim_matches([' ', '\t', '\n', '\r']);
        for (from, data) in relayed {
            if from == *me {
                assert_eq!(data, sent, "relayed data differs from what was sent");
            }
        }
        // One request relays one message: every classic `message` of this
        // step is it, and classic peers get the sender's text too (#12/13).
        for data in relayed_classic {
            assert_eq!(data, sent, "a classic peer got other data");
        }
    }

    fn resume(&mut self, inp: &mut Input<'_>, slot: usize) {
        let (session, token) = match (inp.u8() % 8, &self.slots[slot].session) {
            (0, _) | (_, None) => (inp.text(30), inp.text(30)),
            (1, Some((s, _))) => (s.clone(), inp.text(30)),
            (_, Some((s, t))) => (s.clone(), t.clone()),
        };
        let last_seq = match inp.u8() % 4 {
            0 => u64::from(inp.u32()),
            1 => self.slots[slot].last_seq + u64::from(inp.u8() % 4),
            _ => self.slots[slot]
                .last_seq
                .saturating_sub(u64::from(inp.u8() % 16)),
        };
        let conn = self.conn_for(inp, slot);
        let identity = self.identity(inp);
        self.forget_conn(conn);
        let now = self.now;
        let resumed = self
            .core
            .resume(now, conn, &session, &token, last_seq, identity, |_| {
                Vec::new()
            });
        self.live.insert(conn);
        if resumed {
            self.expect_first.insert(conn, last_seq + 1);
        }
        self.slots[slot].conn = Some(conn);
        self.slots[slot].face = Some(Face::Native);
        self.slots[slot].last_seq = if resumed { last_seq } else { 0 };
    }

    /// Moves the virtual clock, firing every timer due on the way.
    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        // Each round fires at least one due timer; the bound is a backstop, not a limit.
        for _ in 0..1000 {
            match self.core.poll_timeout() {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    self.core.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = target;
        self.core.handle_timeout(self.now);
    }

    fn drain(&mut self) {
        // Closing a connection can queue more output (a `bye`), hence the rounds.
        for _ in 0..8 {
            while let Some(out) = self.core.poll_output() {
                self.check(out);
            }
            while self.core.poll_event().is_some() {}
            if self.closing.is_empty() {
                return;
            }
            for conn in std::mem::take(&mut self.closing) {
                self.core.disconnect(self.now, conn, Disconnect::Abrupt);
                self.forget_conn(conn);
            }
        }
    }

    fn check(&mut self, out: Output) {
        match out {
            Output::Frame { conn, frame } => {
                let mut text = Vec::new();
                frame.write_to(&mut text);
                let v = Fields::parse(&text);
                let ty = v
                    .str("type")
                    .unwrap_or_else(|| panic!("frame without a type: {v}"));
                self.learn(conn, &ty, &v);
                if ty == "message"
                    && let (Some(from), Some(data)) = (v.str("from"), v.raw("data"))
                {
                    self.relayed.push((from, data.to_owned()));
                }
                if let Some(seq) = frame.seq {
                    assert_eq!(v.u64("seq"), Some(seq), "{v}");
                    if let Some(&prev) = self.seq.get(&conn) {
                        assert_eq!(seq, prev + 1, "seq on {conn:?} after {prev}: {v}");
                    } else if let Some(first) = self.expect_first.remove(&conn) {
                        assert_eq!(seq, first, "first seq on resumed {conn:?}: {v}");
                    }
                    self.seq.insert(conn, seq);
                    if let Some(session) = self.conn_session.get(&conn) {
                        let kept = self.sent.entry(session.clone()).or_default();
                        let first = kept.entry(seq).or_insert_with(|| frame.body.to_vec());
                        assert!(
                            first[..] == frame.body[..],
                            "seq {seq} of a session sent twice with different bodies: {} then {}",
                            String::from_utf8_lossy(first),
                            String::from_utf8_lossy(&frame.body)
                        );
                    }
                    for s in &mut self.slots {
                        if s.conn == Some(conn) {
                            s.last_seq = s.last_seq.max(seq);
                        }
                    }
                }
            }
            Output::Classic { conn: _, event } => {
                serde_json::to_string(&event.args).expect("classic event arguments serialize");
                let arg = |i: usize| event.args.iter().nth(i).map(|a| a.get().to_owned());
                if matches!(event.event, "joined" | "otherjoin")
                    && let Some(peer) = arg(1).and_then(|a| serde_json::from_str::<String>(&a).ok())
                {
                    self.remember_peer(&peer);
                }
                if event.event == "message" {
                    self.relayed_classic.push(arg(1).unwrap_or_default());
                }
            }
            Output::Close { conn, .. } => self.closing.push(conn),
            // SFU rooms: what the media relay would get; nothing to check here.
            Output::Media(_) => {}
            Output::Backplane(_) | Output::ClassicReply { .. } => {
                panic!("a node alone has no backplane")
            }
        }
    }

    /// Ids that later requests may name, and the session a connection speaks for.
    fn learn(&mut self, conn: ConnId, ty: &str, v: &Fields) {
        let s = |k: &str| v.str(k);
        match ty {
            "welcome" => {
                // A fresh session on this connection: its seq starts over.
                self.seq.remove(&conn);
                self.expect_first.remove(&conn);
                if let (Some(session), Some(token)) = (s("session"), s("resume_token")) {
                    self.conn_session.insert(conn, session.clone());
                    for slot in &mut self.slots {
                        if slot.conn == Some(conn) {
                            slot.session = Some((session.clone(), token.clone()));
                            slot.last_seq = 0;
                            slot.peer = s("peer");
                        }
                    }
                }
            }
            "resumed" => {
                if let Some(session) = s("session") {
                    self.conn_session.insert(conn, session);
                }
                for slot in &mut self.slots {
                    if slot.conn == Some(conn) {
                        slot.peer = s("peer");
                    }
                }
            }
            _ => {}
        }
        for k in ["peer", "from"] {
            if let Some(p) = s(k) {
                self.remember_peer(&p);
            }
        }
        if let Some(c) = s("call")
            && !self.calls.contains(&c)
            && self.calls.len() < 16
        {
            self.calls.push(c);
        }
    }

    fn remember_peer(&mut self, peer: &str) {
        if !self.peers.iter().any(|p| p == peer) && self.peers.len() < 16 {
            self.peers.push(peer.to_owned());
        }
    }
}

/// A frame's top-level fields as raw JSON text. Not `serde_json::Value`: any valid JSON
/// must pass, and relayed `data` may hold numbers out of f64's range (`1e400`), which
/// `Value` refuses but the grammar allows.
struct Fields {
    text: String,
    fields: HashMap<String, Box<RawValue>>,
}

impl Fields {
    fn parse(text: &[u8]) -> Self {
        let text = String::from_utf8(text.to_vec()).expect("a frame is UTF-8");
        let fields = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("frame is not a JSON object ({e}): {text}"));
        Fields { text, fields }
    }

    fn raw(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(|r| r.get())
    }

    fn str(&self, k: &str) -> Option<String> {
        serde_json::from_str(self.raw(k)?).ok()
    }

    fn u64(&self, k: &str) -> Option<u64> {
        serde_json::from_str(self.raw(k)?).ok()
    }
}

impl std::fmt::Display for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let mut h = Harness::new(inp.bool());
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        h.step(&mut inp);
    }
    // Everyone leaves and every timer runs out: the core must end empty.
    for conn in std::mem::take(&mut h.live) {
        h.core.disconnect(h.now, conn, Disconnect::Abrupt);
    }
    h.drain();
    h.advance(Duration::from_secs(3600));
    h.drain();
    let stats = h.core.stats();
    assert_eq!(stats.sessions, 0, "sessions outlive their grace: {stats:?}");
    assert_eq!(stats.rooms, 0, "rooms outlive their members: {stats:?}");
    assert_eq!(
        stats.ringing_calls, 0,
        "calls outlive their ring timeout: {stats:?}"
    );
});
