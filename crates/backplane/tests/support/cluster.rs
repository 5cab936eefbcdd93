//! Both stores side by side: the same commands, in the same order, go to
//! the in-memory reference (`switchboard_signal::cluster::store::Store`)
//! and to a real Redis as several nodes, and each node must get the same
//! pushes and the same `Event::Applied` answers from both.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_backplane::codec::{answered, encode_push};
use switchboard_backplane::{Event, Events, RedisBackplane, Settings, StoreConfig};
use switchboard_signal::cluster::store::Store;
use switchboard_signal::cluster::{
    Command, NodeId, Push, RoomEvent, SeatLimits, SessionRecord, Text,
};
use switchboard_signal::{Face, MediaKind};

use super::RedisServer;

pub const SENTINEL: &str = "\0sentinel";

pub struct Node {
    pub id: NodeId,
    pub bp: RedisBackplane,
    pub rx: Events,
}

pub struct Cluster {
    pub redis: RedisServer,
    pub store: Store,
    pub t: Instant,
    pub nodes: Vec<Node>,
    pub expected: HashMap<NodeId, Vec<Push>>,
    /// The reference's answers to each node's `Persist`s and `Resumed`s.
    pub applied: HashMap<NodeId, Vec<bool>>,
    pub admin: redis::aio::MultiplexedConnection,
}

impl Cluster {
    pub async fn new(cfg: StoreConfig, names: &[&str]) -> Self {
        Cluster::with_generation(cfg, names, 1).await
    }

    /// Both stores say they are `generation`: the reference by
    /// construction, Redis by its key set before any resync.
    pub async fn with_generation(cfg: StoreConfig, names: &[&str], generation: u64) -> Self {
        let redis = RedisServer::start();
        let mut admin = redis::Client::open(redis.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("admin connection");
        let _: () = redis::cmd("SET")
            .arg("sb:gen")
            .arg(generation)
            .query_async(&mut admin)
            .await
            .expect("set the generation");
        let mut settings = Settings::new(cfg);
        settings.heartbeat = false;
        settings.sweep = false;
        let mut nodes = Vec::new();
        for name in names {
            let id = NodeId::new(name);
            let (bp, mut rx) = RedisBackplane::connect(&redis.url(), id.clone(), settings.clone())
                .await
                .expect("connect");
            let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
            assert!(
                matches!(first, Ok(Some(Event::Up))),
                "first event: {first:?}"
            );
            nodes.push(Node { id, bp, rx });
        }
        Cluster {
            redis,
            store: Store::with_generation(cfg, generation),
            t: Instant::now(),
            nodes,
            expected: HashMap::new(),
            applied: HashMap::new(),
            admin,
        }
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| &*n.id.0 == name)
            .expect("known node")
    }

    /// The reference's new pushes, also kept to compare.
    pub fn drain_store(&mut self) -> Vec<(NodeId, Push)> {
        let mut new = Vec::new();
        while let Some((to, push)) = self.store.poll() {
            self.expected
                .entry(to.clone())
                .or_default()
                .push(push.clone());
            new.push((to, push));
        }
        new
    }

    /// One command of `name`, applied by both before the next one; the
    /// reference's answer and pushes.
    pub async fn cmd(&mut self, name: &str, cmd: Command) -> (bool, Vec<(NodeId, Push)>) {
        let id = NodeId::new(name);
        let ok = self.store.handle(self.t, &id, cmd.clone());
        if answered(&cmd) {
            self.applied.entry(id).or_default().push(ok);
        }
        let pushes = self.drain_store();
        let bp = &self.node(name).bp;
        bp.send(&cmd).expect("send");
        bp.flush().await.expect("flush");
        (ok, pushes)
    }

    /// Registers each `(node, session, peer)`, a native session without a
    /// user.
    pub async fn register_all(&mut self, sessions: &[(&str, &str, &str)]) {
        for (node, s, p) in sessions {
            self.cmd(node, Command::Register(rec(s, p, None))).await;
        }
    }

    /// Like [`Cluster::cmd`], but Redis gets it later, in the same rounds
    /// as the node's other queued ones, until [`Cluster::flush`].
    pub fn queue(&mut self, name: &str, cmd: Command) -> (bool, Vec<(NodeId, Push)>) {
        let id = NodeId::new(name);
        let ok = self.store.handle(self.t, &id, cmd.clone());
        if answered(&cmd) {
            self.applied.entry(id).or_default().push(ok);
        }
        let pushes = self.drain_store();
        self.node(name).bp.send(&cmd).expect("send");
        (ok, pushes)
    }

    /// Waits until Redis applied what `name` queued.
    pub async fn flush(&mut self, name: &str) {
        self.node(name).bp.flush().await.expect("flush");
    }

    pub async fn sweep(&mut self, by: &str) {
        self.store.handle_timeout(self.t);
        self.drain_store();
        let bp = &self.node(by).bp;
        bp.sweep().expect("sweep");
        bp.flush().await.expect("flush");
    }

    /// Every node got what the store gave it, in order, and the same
    /// answers; returns the pushes.
    pub async fn check(&mut self) -> HashMap<NodeId, Vec<Push>> {
        let sentinel = Push::Resynced {
            lost: vec![SENTINEL.into()],
            generation: 0,
        };
        let payload = encode_push(&sentinel).expect("encodable");
        let mut all = HashMap::new();
        for node in &mut self.nodes {
            let channel = format!("sb:node:{}", node.id);
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&payload)
                .query_async(&mut self.admin)
                .await
                .expect("publish sentinel");
            let mut got = Vec::new();
            let mut answers = Vec::new();
            // Every answer is in the channel before the flush that followed
            // its command returned, so before the sentinel.
            loop {
                let ev = tokio::time::timeout(Duration::from_secs(10), node.rx.recv())
                    .await
                    .unwrap_or_else(|_| panic!("{}: no sentinel; got {got:?}", node.id))
                    .expect("events open");
                match ev {
                    Event::Push(p) if p == sentinel => break,
                    Event::Push(p) => got.push(p),
                    Event::Applied(ok) => answers.push(ok),
                    other => panic!("{}: unexpected {other:?}", node.id),
                }
            }
            let want = self.expected.remove(&node.id).unwrap_or_default();
            if let Some(i) = (0..got.len().max(want.len()))
                .find(|&i| got.get(i).map(timeless) != want.get(i).map(timeless))
            {
                eprintln!(
                    "node {}: first difference at push {i}:\n redis: {:?}\n reference: {:?}",
                    node.id,
                    got.get(i),
                    want.get(i)
                );
            }
            assert_eq!(
                got.iter().map(timeless).collect::<Vec<_>>(),
                want.iter().map(timeless).collect::<Vec<_>>(),
                "pushes to node {}",
                node.id
            );
            let want = self.applied.remove(&node.id).unwrap_or_default();
            assert_eq!(answers, want, "answers to node {}", node.id);
            all.insert(node.id.clone(), got);
        }
        assert!(
            self.expected.is_empty(),
            "pushes to nodes not under test: {:?}",
            self.expected
        );
        all
    }
}

/// A push with its ages zeroed: each store measures them on its own clock
/// (the reference on the test's virtual one, Redis on its real one), so
/// they are compared apart (see the admin test).
fn timeless(p: &Push) -> Push {
    let mut p = p.clone();
    match &mut p {
        Push::Rooms { rooms, .. } => {
            for r in rooms {
                r.age_ms = 0;
            }
        }
        Push::Room { room: Some(r), .. } => {
            r.age_ms = 0;
            for m in &mut r.members {
                m.age_ms = 0;
            }
        }
        _ => {}
    }
    p
}

pub fn rec(session: &str, peer: &str, user: Option<&str>) -> SessionRecord {
    SessionRecord {
        session: session.into(),
        token: format!("tok-{session}").into(),
        peer: peer.into(),
        user: user.map(Into::into),
        face: Face::Native,
        seq: 0,
        frames: Vec::new(),
        rooms: Vec::new(),
        epoch: 0,
        base: None,
    }
}

pub fn copies(sessions: &[(&str, u32)]) -> Vec<(Text, u32)> {
    sessions.iter().map(|(s, e)| ((*s).into(), *e)).collect()
}

pub fn persist(session: &str, epoch: u32, seq: u64, body: &[u8], sent: bool) -> Command {
    Command::Persist {
        session: session.into(),
        epoch,
        seq,
        body: Bytes::copy_from_slice(body),
        sent,
    }
}

pub fn join(
    req: u64,
    session: &str,
    room: &str,
    meta: Option<&str>,
    limits: SeatLimits,
) -> Command {
    Command::Join {
        req,
        session: session.into(),
        room: room.into(),
        meta: meta.map(Into::into),
        limits,
        private: None,
        media: MediaKind::Mesh,
        relay: false,
    }
}

/// A join that makes an SFU room if it makes one; `relay`: its node has a
/// media socket.
pub fn sfu_join(req: u64, session: &str, room: &str, relay: bool) -> Command {
    Command::Join {
        req,
        session: session.into(),
        room: room.into(),
        meta: None,
        limits: SeatLimits::default(),
        private: None,
        media: MediaKind::Sfu,
        relay,
    }
}

pub fn private_join(req: u64, session: &str, room: &str, pair: [&str; 2]) -> Command {
    Command::Join {
        req,
        session: session.into(),
        room: room.into(),
        meta: None,
        limits: SeatLimits::default(),
        private: Some([pair[0].into(), pair[1].into()]),
        media: MediaKind::Mesh,
        relay: false,
    }
}

pub fn cap(max_peers: usize, max_listed: usize) -> SeatLimits {
    SeatLimits {
        max_peers,
        max_listed,
    }
}

pub fn msg(from: &str, data: &str) -> RoomEvent {
    RoomEvent::Message {
        from: from.into(),
        data: data.into(),
    }
}
