//! A virtual-clock driver: connects clients, feeds frames, drains outputs
//! into per-connection inboxes and checks every frame against the protocol
//! types.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_signal::{
    ClassicEvent, Config, ConnId, Disconnect, Face, IceServer, Identity, MediaOutput, Output,
    SignalCore,
};
use switchboard_signal_proto::ServerFrame;

pub struct Client {
    pub conn: ConnId,
    pub session: String,
    pub token: String,
    pub peer: String,
}

pub struct H {
    pub core: SignalCore,
    pub now: Instant,
    next_conn: u64,
    inbox: HashMap<ConnId, VecDeque<Value>>,
    events: HashMap<ConnId, VecDeque<ClassicEvent>>,
    pub closes: Vec<(ConnId, u16, &'static str)>,
    /// What the core told the media relay, in order.
    pub media: Vec<MediaOutput>,
}

pub fn ice(peer: &str) -> Vec<IceServer> {
    vec![IceServer {
        urls: vec!["stun:example.test:3478".into()],
        username: Some(format!("1700000000:{peer}")),
        credential: Some("c2VjcmV0".into()),
    }]
}

pub fn user(name: &str) -> Identity {
    Identity {
        user: Some(name.into()),
        ..Identity::default()
    }
}

/// The frame without its `seq`.
pub fn strip(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("seq");
    }
    v
}

pub fn seq(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {v}"))
}

impl H {
    pub fn new(config: Config) -> Self {
        H {
            core: SignalCore::new(config, [42; 32]),
            now: Instant::now(),
            next_conn: 0,
            inbox: HashMap::new(),
            events: HashMap::new(),
            closes: Vec::new(),
            media: Vec::new(),
        }
    }

    pub fn default() -> Self {
        H::new(Config::default())
    }

    pub fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    pub fn connect(&mut self) -> Client {
        self.connect_as(Identity::default())
    }

    pub fn connect_as(&mut self, identity: Identity) -> Client {
        let conn = self.conn();
        self.core
            .connect(self.now, conn, identity, Face::Native, ice);
        self.pump();
        let w = self.next(conn);
        self.client_from_welcome(conn, &w)
    }

    pub fn client_from_welcome(&mut self, conn: ConnId, w: &Value) -> Client {
        assert_eq!(w["type"], "welcome", "{w}");
        assert!(w.get("seq").is_none(), "{w}");
        Client {
            conn,
            session: w["session"].as_str().expect("session").into(),
            token: w["resume_token"].as_str().expect("token").into(),
            peer: w["peer"].as_str().expect("peer").into(),
        }
    }

    pub fn classic(&mut self) -> ConnId {
        let conn = self.conn();
        self.core
            .connect(self.now, conn, Identity::default(), Face::Classic, ice);
        self.pump();
        assert!(self.inbox.get(&conn).is_none_or(VecDeque::is_empty));
        conn
    }

    pub fn send(&mut self, conn: ConnId, v: Value) {
        self.text(conn, &v.to_string());
    }

    pub fn text(&mut self, conn: ConnId, text: &str) {
        self.core.handle_text(self.now, conn, text);
        self.pump();
    }

    pub fn emit(
        &mut self,
        conn: ConnId,
        event: &str,
        args: Vec<Value>,
        ack: bool,
    ) -> Option<Value> {
        let r = self.core.handle_classic(self.now, conn, event, &args, ack);
        self.pump();
        r
    }

    pub fn drop_conn(&mut self, conn: ConnId, how: Disconnect) {
        self.core.disconnect(self.now, conn, how);
        self.pump();
    }

    pub fn resume(&mut self, c: &Client, last_seq: u64) -> (ConnId, bool) {
        let conn = self.conn();
        let ok = self.core.resume(
            self.now,
            conn,
            &c.session,
            &c.token,
            last_seq,
            Identity::default(),
            ice,
        );
        self.pump();
        (conn, ok)
    }

    pub fn pump(&mut self) {
        let mut wire = Vec::new();
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Frame { conn, frame } => {
                    wire.clear();
                    frame.write_to(&mut wire);
                    let v: Value = serde_json::from_slice(&wire)
                        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&wire)));
                    assert_eq!(v.get("seq").and_then(Value::as_u64), frame.seq, "{v}");
                    let typed: Result<ServerFrame, _> = serde_json::from_slice(&wire);
                    assert!(typed.is_ok(), "not a protocol frame: {v}: {typed:?}");
                    self.inbox.entry(conn).or_default().push_back(v);
                }
                Output::Classic { conn, event } => {
                    self.events.entry(conn).or_default().push_back(event);
                }
                Output::Close { conn, code, reason } => self.closes.push((conn, code, reason)),
                Output::Media(m) => self.media.push(m),
                Output::Backplane(cmd) => panic!("a node alone has no backplane: {cmd:?}"),
                Output::ClassicReply { .. } => panic!("a node alone answers classic acks at once"),
            }
        }
    }

    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        // Bounded: each round runs at least one due timer.
        for _ in 0..10_000 {
            match self.core.poll_timeout() {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.core.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = until;
    }

    /// The next frame for `conn`.
    pub fn next(&mut self, conn: ConnId) -> Value {
        self.inbox
            .get_mut(&conn)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| panic!("no frame for {conn:?}"))
    }

    /// The next frame, which must equal `expected` apart from `seq`.
    pub fn expect(&mut self, conn: ConnId, expected: Value) -> Value {
        let v = self.next(conn);
        assert_eq!(strip(v.clone()), expected);
        v
    }

    /// The next frame must be an error with this code (and `reply_to`).
    pub fn expect_error(&mut self, conn: ConnId, code: &str, reply_to: Option<Value>) {
        let v = self.next(conn);
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert_eq!(v.get("reply_to"), reply_to.as_ref(), "{v}");
    }

    /// Puts a frame back at the end of `conn`'s inbox.
    pub fn inject(&mut self, conn: ConnId, v: Value) {
        self.inbox.entry(conn).or_default().push_back(v);
    }

    pub fn take(&mut self, conn: ConnId) -> Vec<Value> {
        self.inbox.remove(&conn).map(Vec::from).unwrap_or_default()
    }

    pub fn quiet(&mut self, conn: ConnId) {
        let left = self.take(conn);
        assert!(left.is_empty(), "unexpected frames for {conn:?}: {left:?}");
    }

    pub fn event(&mut self, conn: ConnId) -> (String, Vec<Value>) {
        let e = self
            .events
            .get_mut(&conn)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| panic!("no classic event for {conn:?}"));
        (e.event.to_string(), e.args.to_values())
    }

    pub fn quiet_events(&mut self, conn: ConnId) {
        let left = self.events.remove(&conn).unwrap_or_default();
        assert!(left.is_empty(), "unexpected events for {conn:?}: {left:?}");
    }

    /// Joins and checks the reply; returns the reply.
    pub fn join(&mut self, c: &Client, room: &str) -> Value {
        self.send(c.conn, json!({"type":"join","room":room}));
        let v = self.next(c.conn);
        assert_eq!(v["type"], "joined", "{v}");
        v
    }
}
