//! A simulated cluster on a virtual clock: N clustered cores and the
//! in-memory store on a bus with random delays (FIFO per link, so pushes
//! and commands of one node keep their order, while different nodes
//! interleave freely), partitions and deaths. Clients are the harness's:
//! every sequenced frame a client gets is checked to follow the last one
//! it got, across connections and nodes.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use switchboard_signal::cluster::store::{Store, StoreConfig};
use switchboard_signal::cluster::{Command, NodeId, Push};
use switchboard_signal::{
    AdminAnswer, AdminError, AdminId, AdminReply, AdminRequest, ClassicEvent, ClusterConfig,
    Config, ConnId, Disconnect, Face, IceServer, Identity, MediaOutput, Output, SignalCore,
};

pub const NODE_TIMEOUT: Duration = Duration::from_secs(10);

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

pub struct SimNode {
    pub id: NodeId,
    pub core: SignalCore,
    pub alive: bool,
    /// Cut off from the store (a partition, Redis down).
    pub cut: bool,
    to_store: VecDeque<(Instant, Command)>,
    from_store: VecDeque<(Instant, Push)>,
    /// The store's answers to `Persist` (Redis: the command connection's
    /// replies, a stream apart from the pushes).
    answers: VecDeque<(Instant, bool)>,
    /// What the core handed its SFU, in order (see `Sim::media`).
    pub media: Vec<MediaOutput>,
}

/// A client of the harness: a session as its owner sees it.
#[derive(Debug, Default)]
pub struct Client {
    pub session: String,
    pub token: String,
    pub peer: String,
    /// The connection it is on now, as `(node, conn)`.
    pub conn: Option<(usize, ConnId)>,
    /// Every sequenced frame, in `seq` order, across connections.
    pub frames: Vec<Value>,
    /// Frames without `seq` (welcome, resumed, resume_failed).
    pub unsequenced: Vec<Value>,
    /// Classic events and ack payloads.
    pub events: Vec<ClassicEvent>,
    pub replies: Vec<Value>,
    /// Close codes its connections got.
    pub closes: Vec<u16>,
    pub last_seq: u64,
    /// Frames read by the test so far (see `Sim::fresh`).
    read: usize,
}

pub struct Sim {
    pub now: Instant,
    start: Instant,
    pub store: Store,
    store_cfg: StoreConfig,
    pub nodes: Vec<SimNode>,
    pub clients: Vec<Client>,
    by_conn: HashMap<(usize, ConnId), usize>,
    rng: ChaCha8Rng,
    /// Bus delay range, in microseconds.
    pub delay: (u64, u64),
    next_conn: u64,
    /// Admin answers, with the node that gave them.
    pub admin: Vec<(usize, AdminAnswer)>,
    next_admin: u64,
    /// `Command::Forward`s the nodes sent (messages past the store).
    pub forwarded: u64,
}

impl Sim {
    pub fn new(nodes: usize, config: Config, seed: u64) -> Sim {
        let now = Instant::now();
        let store_cfg = StoreConfig {
            replay_frames: config.replay_frames,
            replay_bytes: config.replay_bytes,
            node_timeout: NODE_TIMEOUT,
        };
        let store = Store::new(store_cfg);
        let mut sim = Sim {
            now,
            start: now,
            store,
            store_cfg,
            nodes: Vec::new(),
            clients: Vec::new(),
            by_conn: HashMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            delay: (50, 3000),
            next_conn: 0,
            admin: Vec::new(),
            next_admin: 0,
            forwarded: 0,
        };
        for i in 0..nodes {
            let id = NodeId::new(&format!("n{i}"));
            let mut seed_bytes = [0u8; 32];
            seed_bytes[0] = i as u8;
            seed_bytes[1..9].copy_from_slice(&seed.to_le_bytes());
            let mut core = SignalCore::clustered(
                config.clone(),
                seed_bytes,
                ClusterConfig {
                    node: id.clone(),
                    node_timeout: NODE_TIMEOUT,
                },
            );
            core.backplane_up(now);
            sim.nodes.push(SimNode {
                id,
                core,
                alive: true,
                cut: false,
                to_store: VecDeque::new(),
                from_store: VecDeque::new(),
                answers: VecDeque::new(),
                media: Vec::new(),
            });
            sim.pump(i);
        }
        sim.settle();
        sim
    }

    fn delay(&mut self) -> Duration {
        Duration::from_micros(self.rng.random_range(self.delay.0..=self.delay.1))
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    // ---- clients ----

    pub fn connect(&mut self, node: usize, identity: Identity) -> usize {
        let conn = self.conn();
        let c = self.clients.len();
        self.clients.push(Client {
            conn: Some((node, conn)),
            ..Client::default()
        });
        self.by_conn.insert((node, conn), c);
        let now = self.now;
        self.nodes[node]
            .core
            .connect(now, conn, identity, Face::Native, ice);
        self.pump(node);
        let w = self.clients[c]
            .unsequenced
            .last()
            .cloned()
            .expect("welcome");
        assert_eq!(w["type"], "welcome", "{w}");
        self.clients[c].session = w["session"].as_str().expect("session").into();
        self.clients[c].token = w["resume_token"].as_str().expect("token").into();
        self.clients[c].peer = w["peer"].as_str().expect("peer").into();
        c
    }

    pub fn classic(&mut self, node: usize) -> usize {
        let conn = self.conn();
        let c = self.clients.len();
        self.clients.push(Client {
            conn: Some((node, conn)),
            ..Client::default()
        });
        self.by_conn.insert((node, conn), c);
        let now = self.now;
        self.nodes[node]
            .core
            .connect(now, conn, Identity::default(), Face::Classic, ice);
        self.pump(node);
        c
    }

    pub fn send(&mut self, c: usize, v: Value) {
        let (node, conn) = self.clients[c].conn.expect("connected");
        let now = self.now;
        self.nodes[node].core.handle_text(now, conn, &v.to_string());
        self.pump(node);
    }

    pub fn emit(&mut self, c: usize, event: &str, args: &[Value], ack: bool) {
        let (node, conn) = self.clients[c].conn.expect("connected");
        let now = self.now;
        let direct = self.nodes[node]
            .core
            .handle_classic(now, conn, event, args, ack);
        assert!(direct.is_none(), "a clustered core answers acks later");
        self.pump(node);
    }

    /// The connection drops without a close frame.
    pub fn cut(&mut self, c: usize) {
        let Some((node, conn)) = self.clients[c].conn.take() else {
            return;
        };
        self.by_conn.remove(&(node, conn));
        if self.nodes[node].alive {
            let now = self.now;
            self.nodes[node]
                .core
                .disconnect(now, conn, Disconnect::Abrupt);
            self.pump(node);
        }
    }

    pub fn close(&mut self, c: usize) {
        let Some((node, conn)) = self.clients[c].conn.take() else {
            return;
        };
        self.by_conn.remove(&(node, conn));
        let now = self.now;
        self.nodes[node]
            .core
            .disconnect(now, conn, Disconnect::Clean);
        self.pump(node);
    }

    /// Resumes on `node` from the last frame the client got.
    pub fn resume(&mut self, c: usize, node: usize) {
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!(
                "{:?} client {c} resumes on n{node} from {}",
                self.now - self.start,
                self.clients[c].last_seq
            );
        }
        self.cut(c);
        let conn = self.conn();
        self.clients[c].conn = Some((node, conn));
        self.by_conn.insert((node, conn), c);
        let (session, token, last) = {
            let cl = &self.clients[c];
            (cl.session.clone(), cl.token.clone(), cl.last_seq)
        };
        let now = self.now;
        self.nodes[node]
            .core
            .resume(now, conn, &session, &token, last, Identity::default(), ice);
        self.pump(node);
    }

    // ---- faults ----

    /// The node's process dies: nothing it had not sent yet arrives, and
    /// its clients' connections drop.
    pub fn kill(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.alive = false;
        n.to_store.clear();
        n.from_store.clear();
        n.answers.clear();
        let gone: Vec<(usize, ConnId)> = self
            .by_conn
            .keys()
            .filter(|(n, _)| *n == node)
            .copied()
            .collect();
        for key in gone {
            if let Some(c) = self.by_conn.remove(&key) {
                self.clients[c].conn = None;
            }
        }
    }

    /// The node loses the store (both ways); its shell notices at once.
    pub fn partition(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.cut = true;
        n.to_store.clear();
        n.from_store.clear();
        n.answers.clear();
        let now = self.now;
        n.core.backplane_down(now);
        self.pump(node);
    }

    /// The store restarts empty (Redis without persistence): every node
    /// loses it, then finds a new one.
    pub fn restart_store(&mut self, generation: u64) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].alive && !self.nodes[i].cut {
                self.partition(i);
            }
        }
        let cfg = self.store_cfg;
        self.store = Store::with_generation(cfg, generation);
        for i in 0..self.nodes.len() {
            if self.nodes[i].alive {
                self.heal(i);
            }
        }
    }

    pub fn heal(&mut self, node: usize) {
        self.nodes[node].cut = false;
        let now = self.now;
        self.nodes[node].core.backplane_up(now);
        self.pump(node);
    }

    // ---- the bus ----

    fn pump(&mut self, node: usize) {
        let mut wire = Vec::new();
        while let Some(out) = self.nodes[node].core.poll_output() {
            match out {
                Output::Frame { conn, frame } => {
                    wire.clear();
                    frame.write_to(&mut wire);
                    let v: Value = serde_json::from_slice(&wire)
                        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&wire)));
                    let Some(&c) = self.by_conn.get(&(node, conn)) else {
                        continue;
                    };
                    let cl = &mut self.clients[c];
                    match frame.seq {
                        Some(seq) => {
                            assert_eq!(
                                seq,
                                cl.last_seq + 1,
                                "client {c} ({}) on n{node}: seq gap or repeat: {v}; before: {:?}",
                                cl.peer,
                                cl.frames.last()
                            );
                            cl.last_seq = seq;
                            cl.frames.push(v);
                        }
                        None => {
                            if v["type"] == "welcome" {
                                // A fresh session: its numbering starts over.
                                cl.last_seq = 0;
                                cl.session = v["session"].as_str().unwrap_or("").into();
                                cl.token = v["resume_token"].as_str().unwrap_or("").into();
                                cl.peer = v["peer"].as_str().unwrap_or("").into();
                            }
                            cl.unsequenced.push(v);
                        }
                    }
                }
                Output::Classic { conn, event } => {
                    if let Some(&c) = self.by_conn.get(&(node, conn)) {
                        self.clients[c].events.push(event);
                    }
                }
                Output::ClassicReply { conn, payload } => {
                    if let Some(&c) = self.by_conn.get(&(node, conn)) {
                        self.clients[c].replies.push(payload);
                    }
                }
                Output::Close { conn, code, .. } => {
                    if let Some(c) = self.by_conn.remove(&(node, conn)) {
                        self.clients[c].closes.push(code);
                        self.clients[c].conn = None;
                    }
                }
                Output::Media(m) => self.nodes[node].media.push(m),
                Output::Backplane(cmd) => {
                    if self.nodes[node].alive && !self.nodes[node].cut {
                        let d = self.delay();
                        let n = &mut self.nodes[node];
                        let at = n
                            .to_store
                            .back()
                            .map_or(self.now + d, |(t, _)| (*t).max(self.now + d));
                        n.to_store.push_back((at, cmd));
                    }
                }
            }
        }
        while self.nodes[node].core.poll_event().is_some() {}
        while let Some(answer) = self.nodes[node].core.poll_admin() {
            self.admin.push((node, answer));
        }
    }

    /// An admin request on `node`, answered once the store's push is back.
    pub fn admin(&mut self, node: usize, request: AdminRequest) -> Result<AdminReply, AdminError> {
        self.next_admin += 1;
        let id = AdminId(self.next_admin);
        let now = self.now;
        self.nodes[node].core.admin(now, id, request);
        self.pump(node);
        self.settle();
        let got: Vec<_> = self
            .admin
            .iter()
            .filter(|(_, a)| a.id == id)
            .cloned()
            .collect();
        assert_eq!(got.len(), 1, "one answer to {id:?}: {got:?}");
        assert_eq!(got[0].0, node, "answered by the node asked");
        got[0].1.result.clone()
    }

    fn store_out(&mut self) {
        while let Some((to, push)) = self.store.poll() {
            let Some(i) = self.nodes.iter().position(|n| n.id == to) else {
                continue;
            };
            if !self.nodes[i].alive || self.nodes[i].cut {
                continue;
            }
            let d = self.delay();
            let now = self.now;
            let n = &mut self.nodes[i];
            let at = n
                .from_store
                .back()
                .map_or(now + d, |(t, _)| (*t).max(now + d));
            n.from_store.push_back((at, push));
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let mut next: Option<Instant> = self.store.poll_timeout();
        for n in &self.nodes {
            if !n.alive {
                continue;
            }
            for t in [
                n.to_store.front().map(|x| x.0),
                n.from_store.front().map(|x| x.0),
                n.answers.front().map(|x| x.0),
                n.core.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            {
                next = Some(next.map_or(t, |x: Instant| x.min(t)));
            }
        }
        next
    }

    /// Runs everything due up to `now + d`, then sets the clock there.
    pub fn run(&mut self, d: Duration) {
        let until = self.now + d;
        for _ in 0..5_000_000 {
            let Some(next) = self.next_event() else {
                break;
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            self.step();
        }
        self.now = until;
    }

    /// Lets every message in flight arrive (a few bus delays), without
    /// jumping to far timers.
    pub fn settle(&mut self) {
        self.run(Duration::from_millis(50));
    }

    fn step(&mut self) {
        let now = self.now;
        if self.store.poll_timeout().is_some_and(|t| t <= now) {
            self.store.handle_timeout(now);
            self.store_out();
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                continue;
            }
            while self.nodes[i].to_store.front().is_some_and(|x| x.0 <= now) {
                let Some((_, cmd)) = self.nodes[i].to_store.pop_front() else {
                    break;
                };
                let id = self.nodes[i].id.clone();
                if std::env::var_os("SIM_TRACE").is_some() {
                    eprintln!("{:?} {id} -> store: {cmd:?}", now - self.start);
                }
                self.forwarded += u64::from(matches!(cmd, Command::Forward { .. }));
                let persist = matches!(
                    cmd,
                    Command::Persist { .. } | Command::Append { .. } | Command::Resumed { .. }
                );
                let ok = self.store.handle(now, &id, cmd);
                if persist && !self.nodes[i].cut {
                    let d = self.delay();
                    let n = &mut self.nodes[i];
                    let at = n.answers.back().map_or(now + d, |(t, _)| (*t).max(now + d));
                    n.answers.push_back((at, ok));
                }
                self.store_out();
            }
            while self.nodes[i].from_store.front().is_some_and(|x| x.0 <= now) {
                let Some((_, push)) = self.nodes[i].from_store.pop_front() else {
                    break;
                };
                if std::env::var_os("SIM_TRACE").is_some() {
                    eprintln!(
                        "{:?} store -> {}: {push:?}",
                        now - self.start,
                        self.nodes[i].id
                    );
                }
                self.nodes[i].core.handle_push(now, push);
                self.pump(i);
            }
            while self.nodes[i].answers.front().is_some_and(|x| x.0 <= now) {
                let Some((_, ok)) = self.nodes[i].answers.pop_front() else {
                    break;
                };
                self.nodes[i].core.persisted(ok);
                self.pump(i);
            }
            if self.nodes[i].core.poll_timeout().is_some_and(|t| t <= now) {
                self.nodes[i].core.handle_timeout(now);
                self.pump(i);
            }
        }
    }

    // ---- reading ----

    /// Frames of `c` not read yet.
    pub fn fresh(&mut self, c: usize) -> Vec<Value> {
        let cl = &mut self.clients[c];
        let out = cl.frames[cl.read..].to_vec();
        cl.read = cl.frames.len();
        out
    }

    /// The fresh frames of type `ty` (the others are read too).
    pub fn fresh_of(&mut self, c: usize, ty: &str) -> Vec<Value> {
        self.fresh(c)
            .into_iter()
            .filter(|v| v["type"] == ty)
            .collect()
    }

    /// The one fresh frame with `reply_to == id`.
    pub fn reply(&self, c: usize, id: u64) -> Value {
        let got: Vec<&Value> = self.clients[c]
            .frames
            .iter()
            .filter(|v| v["reply_to"] == id)
            .collect();
        assert_eq!(got.len(), 1, "client {c}: replies to {id}: {got:?}");
        got[0].clone()
    }

    pub fn join(&mut self, c: usize, room: &str, id: u64) -> Value {
        self.send(c, json!({"type": "join", "room": room, "id": id}));
        self.settle();
        self.reply(c, id)
    }

    pub fn peer(&self, c: usize) -> String {
        self.clients[c].peer.clone()
    }

    /// Whether `node` has a media socket (may make SFU rooms).
    pub fn relay(&mut self, node: usize, on: bool) {
        self.nodes[node].core.set_media_relay(on);
    }

    /// `node` stops gracefully: its SFU rooms move now.
    pub fn media_away(&mut self, node: usize) {
        self.nodes[node].core.media_away();
        self.pump(node);
    }

    /// What `node`'s core handed its SFU since the last call.
    pub fn media(&mut self, node: usize) -> Vec<MediaOutput> {
        std::mem::take(&mut self.nodes[node].media)
    }

    /// `node`'s SFU answers `peer` in `room` with `data` (what the shell's
    /// driver does with the SFU's signals).
    pub fn sfu_says(&mut self, node: usize, room: &str, peer: &str, data: Value) -> bool {
        let raw = serde_json::value::to_raw_value(&data).expect("json");
        let now = self.now;
        let sent = self.nodes[node].core.send_media(now, room, peer, &raw);
        self.pump(node);
        sent
    }

    /// `node`'s SFU reports an error about `peer`'s media in `room`.
    pub fn sfu_error(&mut self, node: usize, room: &str, peer: &str, message: &str) -> bool {
        let now = self.now;
        let sent = self.nodes[node].core.media_error(
            now,
            room,
            peer,
            switchboard_signal::ErrorCode::BadRequest,
            message,
        );
        self.pump(node);
        sent
    }
}
