//! Random lifetimes: whatever clients send, connect, drop and resume, the
//! core never panics, every native connection sees `seq` 1, 2, 3, ... from
//! its welcome (or `last_seq + 1, ...` after a resume), the gauges agree
//! with the connections alive, and the media relay hears of every peer of an
//! SFU room once when it enters and once when it leaves for good.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use switchboard_signal::{
    Config, ConnId, Disconnect, Face, Identity, MediaOutput, Output, SignalCore,
};

#[derive(Debug, Clone)]
enum Op {
    Connect {
        classic: bool,
        user: Option<u8>,
    },
    Join(u8, u8),
    Leave(u8, u8),
    Message {
        who: u8,
        room: u8,
        to: Option<u8>,
        id: bool,
    },
    Ping(u8),
    /// A `media` request (room1 is made as an SFU room when a native join
    /// makes it).
    Media(u8, u8),
    /// The relay's `media` frame to one peer.
    Relay(u8, u8),
    Call(u8, u8),
    Answer {
        who: u8,
        call: u8,
        kind: u8,
    },
    Garbage(u8, u8),
    Classic {
        who: u8,
        event: u8,
        room: u8,
    },
    Drop {
        who: u8,
        clean: bool,
    },
    Resume {
        who: u8,
        back: u8,
    },
    Advance(u8),
}

fn op() -> impl Strategy<Value = Op> {
    // Weighted towards what makes traffic: peers sharing two rooms, calls.
    let connect = (any::<bool>(), prop::option::of(0u8..3))
        .prop_map(|(classic, user)| Op::Connect { classic, user });
    let message = (
        any::<u8>(),
        0u8..2,
        prop::option::of(any::<u8>()),
        any::<bool>(),
    )
        .prop_map(|(who, room, to, id)| Op::Message { who, room, to, id });
    let answer = (any::<u8>(), any::<u8>(), 0u8..3).prop_map(|(who, call, kind)| Op::Answer {
        who,
        call,
        kind,
    });
    let classic = (any::<u8>(), 0u8..4, 0u8..2).prop_map(|(who, event, room)| Op::Classic {
        who,
        event,
        room,
    });
    prop_oneof![
        3 => connect,
        4 => (any::<u8>(), 0u8..2).prop_map(|(w, r)| Op::Join(w, r)),
        1 => (any::<u8>(), 0u8..2).prop_map(|(w, r)| Op::Leave(w, r)),
        5 => message,
        1 => any::<u8>().prop_map(Op::Ping),
        2 => (any::<u8>(), 0u8..2).prop_map(|(w, r)| Op::Media(w, r)),
        2 => (any::<u8>(), 0u8..2).prop_map(|(p, r)| Op::Relay(p, r)),
        2 => (any::<u8>(), 0u8..4).prop_map(|(w, u)| Op::Call(w, u)),
        3 => answer,
        1 => (any::<u8>(), any::<u8>()).prop_map(|(w, g)| Op::Garbage(w, g)),
        2 => classic,
        1 => (any::<u8>(), any::<bool>()).prop_map(|(who, clean)| Op::Drop { who, clean }),
        2 => (any::<u8>(), 0u8..4).prop_map(|(who, back)| Op::Resume { who, back }),
        1 => (0u8..40).prop_map(Op::Advance),
    ]
}

struct Client {
    conn: Option<ConnId>,
    classic: bool,
    session: String,
    token: String,
    /// The last seq this client read, across its connections.
    seen: u64,
}

struct World {
    core: SignalCore,
    now: Instant,
    next_conn: u64,
    clients: Vec<Client>,
    /// Per live native connection: the seq its next frame must carry.
    expect: HashMap<ConnId, u64>,
    owner: HashMap<ConnId, usize>,
    peers: Vec<String>,
    calls: Vec<String>,
    /// (room, peer) pairs the relay was told of and not yet told gone.
    media: HashSet<(String, String)>,
}

impl World {
    fn pick(&self, i: u8) -> Option<usize> {
        (!self.clients.is_empty()).then(|| usize::from(i) % self.clients.len())
    }

    fn live(&self, i: u8) -> Option<(usize, ConnId)> {
        let idx = self.pick(i)?;
        Some((idx, self.clients[idx].conn?))
    }

    fn drain(&mut self) {
        let mut wire = Vec::new();
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Frame { conn, frame } => {
                    wire.clear();
                    frame.write_to(&mut wire);
                    let v: Value = serde_json::from_slice(&wire).expect("json");
                    let owner = *self.owner.get(&conn).expect("frame for a known conn");
                    match frame.seq {
                        None => match v["type"].as_str() {
                            Some("welcome") => {
                                self.expect.insert(conn, 1);
                                let c = &mut self.clients[owner];
                                c.session = v["session"].as_str().expect("session").into();
                                c.token = v["resume_token"].as_str().expect("token").into();
                                c.seen = 0;
                                self.peers.push(v["peer"].as_str().expect("peer").into());
                            }
                            Some("resumed") => {}
                            _ => assert_eq!(v["code"], "resume_failed", "{v}"),
                        },
                        Some(seq) => {
                            let want = self.expect.get_mut(&conn).expect("expected seq");
                            assert_eq!(seq, *want, "seq gap or repeat on {conn:?}: {v}");
                            *want += 1;
                            self.clients[owner].seen = seq;
                            if let Some(call) = v.get("call").and_then(Value::as_str) {
                                self.calls.push(call.into());
                            }
                        }
                    }
                }
                Output::Classic { .. } => {}
                Output::Media(MediaOutput::Joined { room, peer, .. }) => {
                    assert!(self.media.insert((room, peer)), "joined twice");
                }
                Output::Media(MediaOutput::Left { room, peer }) => {
                    assert!(self.media.remove(&(room, peer)), "left unjoined");
                }
                Output::Media(MediaOutput::Signal { room, peer, .. }) => {
                    assert!(
                        self.media.contains(&(room, peer)),
                        "signal from no media peer"
                    );
                }
                Output::Backplane(_) | Output::ClassicReply { .. } => {
                    panic!("a node alone has no backplane")
                }
                Output::Close { conn, code, .. } => {
                    assert_eq!(code, 4001);
                    self.expect.remove(&conn);
                    if let Some(owner) = self.owner.remove(&conn)
                        && self.clients[owner].conn == Some(conn)
                    {
                        self.clients[owner].conn = None;
                    }
                }
            }
        }
    }

    fn text(&mut self, conn: ConnId, v: Value) {
        self.core.handle_text(self.now, conn, &v.to_string());
    }

    fn new_conn(&mut self, owner: usize) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.owner.insert(conn, owner);
        conn
    }

    fn apply(&mut self, op: Op) {
        let room = |r: u8| format!("room{r}");
        match op {
            Op::Connect { classic, user } => {
                let idx = self.clients.len();
                let conn = self.new_conn(idx);
                self.clients.push(Client {
                    conn: Some(conn),
                    classic,
                    session: String::new(),
                    token: String::new(),
                    seen: 0,
                });
                let identity = Identity {
                    user: user.map(|u| format!("u{u}")),
                    ..Identity::default()
                };
                let face = if classic { Face::Classic } else { Face::Native };
                self.core
                    .connect(self.now, conn, identity, face, |_| Vec::new());
            }
            Op::Join(w, r) => {
                if let Some((_, c)) = self.live(w) {
                    let media = if r == 1 { "sfu" } else { "mesh" };
                    self.text(
                        c,
                        json!({"type":"join","room":room(r),"meta":{"w":w},"media":media}),
                    );
                }
            }
            Op::Leave(w, r) => {
                if let Some((_, c)) = self.live(w) {
                    self.text(c, json!({"type":"leave","room":room(r),"id":w}));
                }
            }
            Op::Message {
                who,
                room: r,
                to,
                id,
            } => {
                if let Some((_, c)) = self.live(who) {
                    let mut m = json!({"type":"message","room":room(r),"data":{"n":who}});
                    if let Some(t) = to.filter(|_| !self.peers.is_empty()) {
                        m["to"] = json!(self.peers[usize::from(t) % self.peers.len()]);
                    }
                    if id {
                        m["id"] = json!("m");
                    }
                    self.text(c, m);
                }
            }
            Op::Ping(w) => {
                if let Some((_, c)) = self.live(w) {
                    self.text(c, json!({"type":"ping","id":1}));
                }
            }
            Op::Media(w, r) => {
                if let Some((_, c)) = self.live(w) {
                    let data = json!({"kind":"offer","sdp":"v=0"});
                    self.text(c, json!({"type":"media","room":room(r),"data":data,"id":2}));
                }
            }
            Op::Relay(p, r) => {
                if !self.peers.is_empty() {
                    let peer = self.peers[usize::from(p) % self.peers.len()].clone();
                    let data = RawValue::from_string(r#"{"kind":"answer","sdp":"v=0"}"#.into())
                        .expect("json");
                    let room = room(r);
                    let sent = self.core.send_media(self.now, &room, &peer, &data);
                    if sent {
                        assert!(self.media.contains(&(room, peer)), "sent to no media peer");
                    }
                }
            }
            Op::Call(w, u) => {
                if let Some((_, c)) = self.live(w) {
                    self.text(c, json!({"type":"call","to":format!("u{u}")}));
                }
            }
            Op::Answer { who, call, kind } => {
                if let Some((_, c)) = self.live(who)
                    && !self.calls.is_empty()
                {
                    let call = self.calls[usize::from(call) % self.calls.len()].clone();
                    let ty = ["accept", "decline", "cancel"][usize::from(kind)];
                    self.text(c, json!({"type":ty,"call":call,"id":"a"}));
                }
            }
            Op::Garbage(w, g) => {
                if let Some((_, c)) = self.live(w) {
                    let texts = [
                        "",
                        "{",
                        "[]",
                        "null",
                        r#"{"type":"join","room":""}"#,
                        r#"{"type":"message"}"#,
                    ];
                    self.core
                        .handle_text(self.now, c, texts[usize::from(g) % texts.len()]);
                    if g % 7 == 0 {
                        self.core.handle_binary(self.now, c);
                    }
                }
            }
            Op::Classic {
                who,
                event,
                room: r,
            } => {
                if let Some((_, c)) = self.live(who) {
                    let event = ["join", "leave", "message", "other"][usize::from(event)];
                    let _ = self.core.handle_classic(
                        self.now,
                        c,
                        event,
                        &[json!(room(r)), json!({"x":1})],
                        who % 2 == 0,
                    );
                }
            }
            Op::Drop { who, clean } => {
                if let Some((idx, c)) = self.live(who) {
                    let how = if clean {
                        Disconnect::Clean
                    } else {
                        Disconnect::Abrupt
                    };
                    self.core.disconnect(self.now, c, how);
                    self.expect.remove(&c);
                    self.clients[idx].conn = None;
                }
            }
            Op::Resume { who, back } => {
                let Some(idx) = self.pick(who) else { return };
                if self.clients[idx].classic || self.clients[idx].session.is_empty() {
                    return;
                }
                let conn = self.new_conn(idx);
                let c = &self.clients[idx];
                let last = c.seen.saturating_sub(u64::from(back));
                let (session, token) = (c.session.clone(), c.token.clone());
                if let Some(old) = c.conn {
                    // A takeover: the old connection is closed by the core.
                    self.expect.remove(&old);
                }
                self.clients[idx].conn = Some(conn);
                let ok = self.core.resume(
                    self.now,
                    conn,
                    &session,
                    &token,
                    last,
                    Identity::default(),
                    |_| Vec::new(),
                );
                if ok {
                    self.expect.insert(conn, last + 1);
                }
            }
            Op::Advance(s) => {
                self.now += Duration::from_secs(u64::from(s));
                if self.core.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.core.handle_timeout(self.now);
                }
                assert!(self.core.poll_timeout().is_none_or(|t| t > self.now));
            }
        }
        self.drain();
        let live = self.clients.iter().filter(|c| c.conn.is_some()).count();
        let stats = self.core.stats();
        assert_eq!(stats.connected, live, "connected gauge");
        assert!(stats.sessions >= live);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn random_lifetimes_keep_the_invariants(ops in prop::collection::vec(op(), 1..120)) {
        let mut w = World {
            core: SignalCore::new(
                Config { max_peers: 3, replay_frames: 8, rate_burst: 30, rate_per_sec: 5, ..Config::default() },
                [9; 32],
            ),
            now: Instant::now(),
            next_conn: 0,
            clients: Vec::new(),
            expect: HashMap::new(),
            owner: HashMap::new(),
            peers: Vec::new(),
            calls: Vec::new(),
            media: HashSet::new(),
        };
        for op in ops {
            w.apply(op);
        }
        // Everyone leaves for good: nothing may be left behind.
        for i in 0..w.clients.len() {
            if let Some(c) = w.clients[i].conn.take() {
                w.core.disconnect(w.now, c, Disconnect::Clean);
            }
        }
        w.now += Duration::from_secs(3600);
        w.core.handle_timeout(w.now);
        w.drain();
        let s = w.core.stats();
        prop_assert_eq!((s.sessions, s.connected, s.rooms, s.ringing_calls), (0, 0, 0, 0));
        prop_assert_eq!(s.sfu_rooms, 0);
        prop_assert!(w.media.is_empty(), "the relay still has {:?}", w.media);
        prop_assert_eq!(w.core.poll_timeout(), None);
    }
}
