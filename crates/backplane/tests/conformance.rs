//! The Lua store against the reference: the same commands, in the same
//! order, go to `switchboard_signal::cluster::store::Store` and to a real
//! Redis as 3 nodes; every node must receive the same pushes in the same
//! order.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_backplane::codec::encode_push;
use switchboard_backplane::{Event, RedisBackplane, Settings, StoreConfig};
use switchboard_signal::cluster::store::Store;
use switchboard_signal::cluster::{
    Command, NodeId, NodeMsg, Push, RoomEvent, SeatLimits, SeatOutcome, SessionRecord, TakeOutcome,
};
use switchboard_signal::{CallEndReason, Face};
use tokio::sync::mpsc;

use support::RedisServer;

const SENTINEL: &str = "\0sentinel";

struct Node {
    id: NodeId,
    bp: RedisBackplane,
    rx: mpsc::Receiver<Event>,
}

struct Cluster {
    redis: RedisServer,
    store: Store,
    t: Instant,
    nodes: Vec<Node>,
    expected: HashMap<NodeId, Vec<Push>>,
    admin: redis::aio::MultiplexedConnection,
}

impl Cluster {
    async fn new(cfg: StoreConfig, names: &[&str]) -> Self {
        let redis = RedisServer::start();
        let mut settings = Settings::new(cfg);
        settings.heartbeat = false;
        settings.sweep = false;
        let mut nodes = Vec::new();
        for name in names {
            let id = NodeId::new(name);
            let (bp, rx) = RedisBackplane::connect(&redis.url(), id.clone(), settings.clone())
                .await
                .expect("connect");
            nodes.push(Node { id, bp, rx });
        }
        let admin = redis::Client::open(redis.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("admin connection");
        Cluster {
            redis,
            store: Store::new(cfg),
            t: Instant::now(),
            nodes,
            expected: HashMap::new(),
            admin,
        }
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| &*n.id.0 == name)
            .expect("known node")
    }

    fn drain_store(&mut self) {
        while let Some((to, push)) = self.store.poll() {
            self.expected.entry(to).or_default().push(push);
        }
    }

    /// One command of `name`, applied by both before the next one.
    async fn cmd(&mut self, name: &str, cmd: Command) {
        let id = NodeId::new(name);
        self.store.handle(self.t, &id, cmd.clone());
        self.drain_store();
        let bp = &self.node(name).bp;
        bp.send(&cmd).expect("send");
        bp.flush().await.expect("flush");
    }

    async fn sweep(&mut self, by: &str) {
        self.store.handle_timeout(self.t);
        self.drain_store();
        let bp = &self.node(by).bp;
        bp.sweep().expect("sweep");
        bp.flush().await.expect("flush");
    }

    /// Every node got what the store gave it, in order; returns it all.
    async fn check(&mut self) -> HashMap<NodeId, Vec<Push>> {
        let sentinel = Push::Resynced {
            lost: vec![SENTINEL.into()],
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
            loop {
                let ev = tokio::time::timeout(Duration::from_secs(10), node.rx.recv())
                    .await
                    .unwrap_or_else(|_| panic!("{}: no sentinel; got {got:?}", node.id))
                    .expect("events open");
                match ev {
                    Event::Push(p) if p == sentinel => break,
                    Event::Push(p) => got.push(p),
                    other => panic!("{}: unexpected {other:?}", node.id),
                }
            }
            let want = self.expected.remove(&node.id).unwrap_or_default();
            assert_eq!(got, want, "pushes to node {}", node.id);
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

fn rec(session: &str, peer: &str, user: Option<&str>) -> SessionRecord {
    SessionRecord {
        session: session.into(),
        token: format!("tok-{session}").into(),
        peer: peer.into(),
        user: user.map(Into::into),
        face: Face::Native,
        seq: 0,
        frames: Vec::new(),
        rooms: Vec::new(),
    }
}

fn join(req: u64, session: &str, room: &str, meta: Option<&str>, limits: SeatLimits) -> Command {
    Command::Join {
        req,
        session: session.into(),
        room: room.into(),
        meta: meta.map(Into::into),
        limits,
        private: None,
    }
}

fn private_join(req: u64, session: &str, room: &str, pair: [&str; 2]) -> Command {
    Command::Join {
        req,
        session: session.into(),
        room: room.into(),
        meta: None,
        limits: SeatLimits::default(),
        private: Some([pair[0].into(), pair[1].into()]),
    }
}

fn cap(max_peers: usize, max_listed: usize) -> SeatLimits {
    SeatLimits {
        max_peers,
        max_listed,
    }
}

fn msg(from: &str, data: &str) -> RoomEvent {
    RoomEvent::Message {
        from: from.into(),
        data: data.into(),
    }
}

fn outcomes(pushes: &[Push]) -> Vec<(u64, &SeatOutcome)> {
    pushes
        .iter()
        .filter_map(|p| match p {
            Push::JoinAnswer { req, outcome } => Some((*req, outcome)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn seats_capacity_and_private_rooms() {
    let mut c = Cluster::new(StoreConfig::default(), &["a", "b", "c"]).await;
    c.cmd("a", Command::Register(rec("s1", "p1", None))).await;
    c.cmd("b", Command::Register(rec("s2", "p2", None))).await;
    c.cmd("c", Command::Register(rec("s3", "p3", None))).await;
    c.cmd("a", Command::Register(rec("s4", "p4", None))).await;
    // Capacity by peers.
    c.cmd("a", join(1, "s1", "r", Some("{\"n\":1}"), cap(3, 0)))
        .await;
    c.cmd("b", join(2, "s2", "r", None, cap(3, 0))).await;
    c.cmd("a", join(3, "s4", "r", Some("\"x\""), cap(3, 0)))
        .await;
    c.cmd("c", join(4, "s3", "r", None, cap(3, 0))).await;
    // A repeated join answers the same, and is not full.
    c.cmd("b", join(5, "s2", "r", None, cap(3, 0))).await;
    // Capacity by listed bytes: 34 + 72 > 100, then 34 + 34 fits.
    let meta40 = "\"01234567890123456789012345678901234567\"";
    assert_eq!(meta40.len(), 40);
    c.cmd("a", join(6, "s1", "l", None, cap(0, 100))).await;
    c.cmd("b", join(7, "s2", "l", Some(meta40), cap(0, 100)))
        .await;
    c.cmd("c", join(8, "s3", "l", None, cap(0, 100))).await;
    // Another node cannot seat a session it does not own.
    c.cmd("b", join(9, "s1", "x", None, cap(0, 0))).await;
    let got = c.check().await;
    let a = outcomes(&got[&NodeId::new("a")]);
    let cnode = outcomes(&got[&NodeId::new("c")]);
    let b = outcomes(&got[&NodeId::new("b")]);
    assert!(matches!(cnode[0], (4, SeatOutcome::Full)));
    assert!(matches!(b[1], (5, SeatOutcome::Seated { peers }) if peers.len() == 2));
    assert!(matches!(b[2], (7, SeatOutcome::Full)));
    assert!(matches!(cnode[1], (8, SeatOutcome::Seated { peers }) if peers.len() == 1));
    assert!(matches!(b[3], (9, SeatOutcome::Forbidden)));
    assert!(matches!(a[1], (3, SeatOutcome::Seated { .. })));

    // Private call rooms: only the pair, and only with the same privacy.
    c.cmd("a", private_join(10, "s1", "call", ["p1", "p2"]))
        .await;
    c.cmd("c", private_join(11, "s3", "call", ["p1", "p3"]))
        .await;
    c.cmd("c", join(12, "s3", "call", None, cap(0, 0))).await;
    c.cmd("b", private_join(13, "s2", "call", ["p1", "p2"]))
        .await;
    c.cmd("a", private_join(14, "s4", "r", ["p4", "p1"])).await;
    // Leaves: byes to the others' nodes; an emptied room forgets its pair.
    c.cmd(
        "b",
        Command::Leave {
            session: "s2".into(),
            room: "r".into(),
        },
    )
    .await;
    c.cmd(
        "a",
        Command::Leave {
            session: "s1".into(),
            room: "call".into(),
        },
    )
    .await;
    c.cmd(
        "b",
        Command::Leave {
            session: "s2".into(),
            room: "call".into(),
        },
    )
    .await;
    // Not its session: ignored.
    c.cmd(
        "c",
        Command::Leave {
            session: "s4".into(),
            room: "r".into(),
        },
    )
    .await;
    c.cmd("c", join(15, "s3", "call", None, cap(0, 0))).await;
    // Leaving frees the seat for the one that was refused.
    c.cmd("c", join(16, "s3", "r", None, cap(3, 0))).await;
    c.cmd(
        "a",
        Command::End {
            session: "s4".into(),
        },
    )
    .await;
    c.cmd("b", join(17, "s2", "r", None, cap(3, 0))).await;
    let got = c.check().await;
    let cnode = outcomes(&got[&NodeId::new("c")]);
    assert!(matches!(cnode[0], (11, SeatOutcome::Forbidden)));
    assert!(matches!(cnode[1], (12, SeatOutcome::Forbidden)));
    assert!(matches!(cnode[2], (15, SeatOutcome::Seated { .. })));
    assert!(matches!(cnode[3], (16, SeatOutcome::Seated { .. })));
    let b = outcomes(&got[&NodeId::new("b")]);
    assert!(matches!(b[0], (13, SeatOutcome::Seated { peers }) if peers.len() == 1));
    assert!(matches!(b[1], (17, SeatOutcome::Seated { peers }) if peers.len() == 2));
    let a = outcomes(&got[&NodeId::new("a")]);
    assert!(matches!(a[1], (14, SeatOutcome::Forbidden)));
    drop(c.redis);
}

#[tokio::test]
async fn publish_report_and_tell() {
    let mut c = Cluster::new(StoreConfig::default(), &["a", "b", "c"]).await;
    c.cmd("a", Command::Register(rec("s1", "p1", None))).await;
    c.cmd("a", Command::Register(rec("s5", "p5", None))).await;
    c.cmd("b", Command::Register(rec("s2", "p2", None))).await;
    c.cmd("c", Command::Register(rec("s3", "p3", None))).await;
    for (i, (node, s)) in [("a", "s1"), ("a", "s5"), ("b", "s2"), ("c", "s3")]
        .into_iter()
        .enumerate()
    {
        c.cmd(node, join(i as u64, s, "r", None, cap(0, 0))).await;
    }
    let publish =
        |req: Option<u64>, to: Option<&str>, local: &[&str], classic: u64| Command::Publish {
            req,
            room: "r".into(),
            to: to.map(Into::into),
            event: msg("p1", "{\"text\":\"héllo:1\"}"),
            local: local.iter().map(|s| (*s).into()).collect(),
            classic,
        };
    c.cmd("a", publish(Some(10), None, &["s5"], 2)).await;
    c.cmd("a", publish(Some(11), Some("p3"), &[], 0)).await;
    c.cmd("a", publish(Some(12), Some("p5"), &["s5"], 0)).await;
    c.cmd("a", publish(None, None, &["s5"], 0)).await;
    c.cmd("a", publish(Some(13), Some("nobody"), &[], 0)).await;
    c.cmd("a", publish(Some(14), None, &["s2", "s5", "s5"], 0))
        .await;
    c.cmd("b", publish(Some(1), None, &[], 0)).await;
    c.cmd(
        "b",
        Command::Report {
            to: NodeId::new("a"),
            req: 10,
            sessions: vec!["s2".into()],
            classic: 1,
        },
    )
    .await;
    // A resume elsewhere: the old node's report counts nothing any more.
    c.cmd(
        "c",
        Command::Take {
            req: 20,
            session: "s2".into(),
            token: "tok-s2".into(),
            last_seq: 0,
        },
    )
    .await;
    c.cmd(
        "b",
        Command::Report {
            to: NodeId::new("a"),
            req: 14,
            sessions: vec!["s2".into()],
            classic: 0,
        },
    )
    .await;
    c.cmd(
        "c",
        Command::Report {
            to: NodeId::new("a"),
            req: 14,
            sessions: vec!["s2".into(), "s3".into(), "s1".into()],
            classic: 0,
        },
    )
    .await;
    c.cmd("c", publish(Some(15), None, &[], 0)).await;
    // Reports and tells to a node never seen go nowhere.
    c.cmd(
        "c",
        Command::Report {
            to: NodeId::new("z"),
            req: 1,
            sessions: vec![],
            classic: 3,
        },
    )
    .await;
    let tells = [
        (
            "b",
            "a",
            NodeMsg::Accept {
                call: "k".into(),
                session: "s2".into(),
                peer: "p2".into(),
            },
        ),
        (
            "a",
            "b",
            NodeMsg::Won {
                call: "k".into(),
                session: "s2".into(),
                room: "call-k".into(),
                caller: "p1".into(),
            },
        ),
        (
            "a",
            "c",
            NodeMsg::Lost {
                call: "k".into(),
                session: "s3".into(),
            },
        ),
        (
            "a",
            "c",
            NodeMsg::Ended {
                call: "k".into(),
                reason: CallEndReason::AnsweredElsewhere,
                except: Some("s3".into()),
            },
        ),
        (
            "c",
            "a",
            NodeMsg::Decline {
                call: "k".into(),
                session: "s3".into(),
            },
        ),
        ("c", "a", NodeMsg::RingGone { call: "k".into() }),
        (
            "a",
            "a",
            NodeMsg::RingGone {
                call: "self".into(),
            },
        ),
        ("a", "z", NodeMsg::RingGone { call: "z".into() }),
    ];
    for (from, to, m) in tells {
        c.cmd(
            from,
            Command::Tell {
                to: NodeId::new(to),
                msg: m,
            },
        )
        .await;
    }
    let got = c.check().await;
    let a = &got[&NodeId::new("a")];
    assert!(a.contains(&Push::Published {
        req: 10,
        counted: 3,
        nodes: vec![NodeId::new("b"), NodeId::new("c")],
    }));
    assert!(a.contains(&Push::Counted {
        req: 14,
        from: NodeId::new("b"),
        count: 0,
    }));
    assert!(a.contains(&Push::Counted {
        req: 14,
        from: NodeId::new("c"),
        count: 2,
    }));
}

#[tokio::test]
async fn persist_trim_bounds_and_take() {
    let cfg = StoreConfig {
        replay_frames: 3,
        replay_bytes: 25,
        ..StoreConfig::default()
    };
    let mut c = Cluster::new(cfg, &["a", "b", "c"]).await;
    c.cmd("a", Command::Register(rec("s1", "p1", Some("u"))))
        .await;
    c.cmd("a", Command::Register(rec("s1", "dup", None))).await;
    let persist = |s: &str, seq: u64, body: &[u8]| Command::Persist {
        session: s.into(),
        seq,
        body: Bytes::copy_from_slice(body),
    };
    for seq in 1..=5 {
        c.cmd("a", persist("s1", seq, &[b'x'; 10])).await;
    }
    c.cmd("a", persist("s1", 3, b"old")).await;
    c.cmd("b", persist("s1", 9, b"not b's")).await;
    c.cmd(
        "a",
        Command::Trim {
            session: "s1".into(),
            last_seq: 4,
        },
    )
    .await;
    c.cmd("a", persist("s1", 6, b"\0\xff:-1:\r\n")).await;
    c.cmd("a", persist("s1", 7, b"")).await;
    let take = |req: u64, s: &str, token: &str, last_seq: u64| Command::Take {
        req,
        session: s.into(),
        token: token.into(),
        last_seq,
    };
    c.cmd("b", take(1, "s1", "wrong", 0)).await;
    c.cmd("b", take(2, "nope", "tok-nope", 0)).await;
    // Frames from 5 on are kept: a resume from 1 has a gap, but takes it.
    c.cmd("b", take(3, "s1", "tok-s1", 1)).await;
    c.cmd("c", take(4, "s1", "tok-s1", 4)).await;
    c.cmd("c", take(5, "s1", "tok-s1", 6)).await;
    c.cmd("c", take(6, "s1", "tok-s1", 9)).await;
    c.cmd("c", persist("s1", 8, b"behind")).await;
    c.cmd("c", persist("s1", 10, &[b'y'; 30])).await;
    c.cmd("c", take(7, "s1", "tok-s1", 0)).await;
    // A Socket.IO session cannot be resumed.
    let mut classic = rec("s2", "p2", Some("u"));
    classic.face = Face::Classic;
    c.cmd("a", Command::Register(classic)).await;
    c.cmd("b", take(8, "s2", "tok-s2", 0)).await;
    // A registration with frames beyond the bounds keeps the newest.
    let mut full = rec("s3", "p3", None);
    full.seq = 12;
    full.frames = (1..=6).map(|s| (s, Bytes::from(vec![b'z'; 9]))).collect();
    c.cmd("a", Command::Register(full)).await;
    c.cmd("b", take(9, "s3", "tok-s3", 3)).await;
    c.cmd("b", take(10, "s3", "tok-s3", 4)).await;
    c.cmd(
        "b",
        Command::End {
            session: "s3".into(),
        },
    )
    .await;
    c.cmd("b", take(11, "s3", "tok-s3", 4)).await;
    // Exactly at the byte bound is within it.
    c.cmd("a", Command::Register(rec("s4", "p4", None))).await;
    c.cmd("a", persist("s4", 1, &[b'a'; 10])).await;
    c.cmd("a", persist("s4", 2, &[b'b'; 15])).await;
    c.cmd("b", take(12, "s4", "tok-s4", 0)).await;
    let got = c.check().await;
    let took = |n: &str| -> Vec<TakeOutcome> {
        got[&NodeId::new(n)]
            .iter()
            .filter_map(|p| match p {
                Push::Took { outcome, .. } => Some(outcome.clone()),
                _ => None,
            })
            .collect()
    };
    let b = took("b");
    assert_eq!(b[0], TakeOutcome::Unknown);
    assert_eq!(b[1], TakeOutcome::Unknown);
    assert!(matches!(&b[2], TakeOutcome::Gap(r) if r.frames.len() == 3));
    assert_eq!(b[3], TakeOutcome::Unknown);
    assert!(matches!(&b[4], TakeOutcome::Gap(_)));
    assert!(matches!(&b[5], TakeOutcome::Taken(r) if r.frames.len() == 2 && r.seq == 12));
    assert_eq!(b[6], TakeOutcome::Unknown);
    assert!(matches!(&b[7], TakeOutcome::Taken(r) if r.frames.len() == 2));
    let cn = took("c");
    assert!(
        matches!(&cn[0], TakeOutcome::Taken(r) if r.frames.iter().map(|f| f.0).collect::<Vec<_>>() == [5, 6, 7])
    );
    assert!(matches!(&cn[2], TakeOutcome::Taken(r) if r.frames.is_empty() && r.seq == 9));
    assert!(matches!(&cn[3], TakeOutcome::Gap(r) if r.frames.len() == 1));
}

#[tokio::test]
async fn node_death_adoption_dead_and_resync() {
    let cfg = StoreConfig {
        // Long enough that a loaded machine never lets b or c look silent.
        node_timeout: Duration::from_millis(1500),
        ..StoreConfig::default()
    };
    let mut c = Cluster::new(cfg, &["a", "b", "c"]).await;
    let mut s1 = rec("s1", "p1", Some("u"));
    s1.frames = vec![(1, Bytes::from_static(b"one"))];
    s1.seq = 1;
    c.cmd("a", Command::Register(s1)).await;
    c.cmd("a", Command::Register(rec("s2", "p2", None))).await;
    c.cmd("b", Command::Register(rec("s3", "p3", None))).await;
    c.cmd("c", Command::Register(rec("s4", "p4", None))).await;
    c.cmd("a", join(1, "s1", "r", None, cap(0, 0))).await;
    c.cmd("b", join(2, "s3", "r", None, cap(0, 0))).await;
    c.cmd("c", join(3, "s4", "r", None, cap(0, 0))).await;
    c.cmd("c", Command::Heartbeat).await;
    // Nobody is dead yet.
    c.sweep("c").await;
    c.check().await;

    // a falls silent; b and c stay.
    tokio::time::sleep(cfg.node_timeout + Duration::from_millis(100)).await;
    c.t += cfg.node_timeout;
    c.cmd("b", Command::Heartbeat).await;
    c.cmd("c", Command::Heartbeat).await;
    c.sweep("c").await;
    let adopt = |req: u64, dead: &str| Command::Adopt {
        req,
        dead: NodeId::new(dead),
    };
    c.cmd("b", adopt(4, "a")).await;
    c.cmd("c", adopt(5, "a")).await;
    c.cmd("c", adopt(6, "b")).await;
    c.cmd("c", adopt(7, "zz")).await;
    // The dead node is told once, and nothing it says counts.
    c.cmd("a", Command::Heartbeat).await;
    c.cmd("a", Command::Heartbeat).await;
    c.cmd("a", join(8, "s2", "r", None, cap(0, 0))).await;
    // The adopter now owns s1: its frames and rooms went with it.
    c.cmd(
        "b",
        Command::Publish {
            req: Some(9),
            room: "r".into(),
            to: None,
            event: msg("p3", "1"),
            local: vec!["s1".into(), "s3".into()],
            classic: 0,
        },
    )
    .await;
    let got = c.check().await;
    assert_eq!(got[&NodeId::new("a")], vec![Push::Dead]);
    assert!(got[&NodeId::new("b")].contains(&Push::NodeDied {
        node: NodeId::new("a")
    }));
    assert!(matches!(&got[&NodeId::new("b")][1],
        Push::Adopted { sessions, .. } if sessions.len() == 2 && sessions[0].frames.len() == 1));
    assert!(got[&NodeId::new("b")].contains(&Push::Published {
        req: 9,
        counted: 2,
        nodes: vec![NodeId::new("c")],
    }));

    // a comes back: what it held is lost; it is alive again.
    let mut back = rec("s1", "p1", Some("u"));
    back.rooms = vec!["r".into()];
    c.cmd(
        "a",
        Command::Resync {
            sessions: vec![back, rec("s2", "p2", None)],
        },
    )
    .await;
    c.cmd("a", Command::Register(rec("s5", "p5", None))).await;
    c.cmd("a", join(10, "s5", "r", Some("{}"), cap(0, 0))).await;
    // b resyncs with less than the store gives it: s1 left r meanwhile,
    // s2 ended, and a session it never had is lost.
    let mut s1 = rec("s1", "p1", Some("u"));
    s1.seq = 4;
    s1.frames = vec![
        (3, Bytes::from_static(b"three")),
        (4, Bytes::from_static(b"four")),
    ];
    let mut s3 = rec("s3", "p3", None);
    s3.rooms = vec!["r".into()];
    c.cmd(
        "b",
        Command::Resync {
            sessions: vec![s1, s3, rec("s9", "p9", None)],
        },
    )
    .await;
    c.cmd(
        "c",
        Command::Take {
            req: 11,
            session: "s1".into(),
            token: "tok-s1".into(),
            last_seq: 2,
        },
    )
    .await;
    let got = c.check().await;
    assert!(got[&NodeId::new("a")].contains(&Push::Resynced {
        lost: vec!["s1".into(), "s2".into()]
    }));
    assert!(got[&NodeId::new("b")].contains(&Push::Resynced {
        lost: vec!["s9".into()]
    }));
    assert!(matches!(got[&NodeId::new("c")].last(),
        Some(Push::Took { outcome: TakeOutcome::Taken(r), .. }) if r.frames.len() == 2 && r.rooms.is_empty()));
}

#[tokio::test]
async fn ring_reaches_the_users_nodes() {
    let mut c = Cluster::new(StoreConfig::default(), &["a", "b", "c"]).await;
    c.cmd("a", Command::Register(rec("s1", "p1", Some("u"))))
        .await;
    c.cmd("a", Command::Register(rec("s2", "p2", Some("u"))))
        .await;
    c.cmd("b", Command::Register(rec("s3", "p3", Some("u"))))
        .await;
    c.cmd("c", Command::Register(rec("s4", "p4", Some("v"))))
        .await;
    let mut classic = rec("s5", "p5", Some("u"));
    classic.face = Face::Classic;
    c.cmd("c", Command::Register(classic)).await;
    let ring = |req: u64, user: &str, except: &str| Command::Ring {
        req,
        call: format!("call{req}").into(),
        user: user.into(),
        except: except.into(),
        body: Bytes::from_static(b"{\"type\":\"incoming_call\"}"),
    };
    c.cmd("c", ring(1, "u", "s4")).await;
    c.cmd("c", ring(2, "u", "s3")).await;
    c.cmd("c", ring(3, "nobody", "s4")).await;
    c.cmd("a", ring(4, "u", "s1")).await;
    c.cmd(
        "a",
        Command::End {
            session: "s1".into(),
        },
    )
    .await;
    c.cmd(
        "a",
        Command::End {
            session: "s2".into(),
        },
    )
    .await;
    c.cmd("c", ring(5, "u", "s4")).await;
    let got = c.check().await;
    let cn = &got[&NodeId::new("c")];
    assert!(cn.contains(&Push::Published {
        req: 1,
        counted: 0,
        nodes: vec![NodeId::new("a"), NodeId::new("b")],
    }));
    assert!(cn.contains(&Push::Published {
        req: 5,
        counted: 0,
        nodes: vec![NodeId::new("b")],
    }));
    assert!(got[&NodeId::new("a")].contains(&Push::Published {
        req: 4,
        counted: 0,
        nodes: vec![NodeId::new("a"), NodeId::new("b")],
    }));
}

/// Random commands of 3 nodes over a few sessions, rooms and users, with
/// their odd cases (not owned, unknown, wrong token, duplicates); every
/// push must match the reference's.
#[tokio::test]
async fn random_interleavings_match_the_reference() {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    let cfg = StoreConfig {
        replay_frames: 4,
        replay_bytes: 64,
        ..StoreConfig::default()
    };
    for seed in 0..4u64 {
        let mut c = Cluster::new(cfg, &["a", "b", "c"]).await;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nodes = ["a", "b", "c"];
        let pick = |rng: &mut ChaCha8Rng, n: usize| rng.random_range(0..n);
        // Where each session most likely lives, so that most commands come
        // from its owner (a take moves it).
        let mut home: Vec<usize> = (0..8).map(|i| i % 3).collect();
        for step in 0..600u64 {
            let i = pick(&mut rng, 8);
            let node = if pick(&mut rng, 5) == 0 {
                nodes[pick(&mut rng, 3)]
            } else {
                nodes[home[i]]
            };
            let s = format!("s{i}");
            let room = format!("r{}", pick(&mut rng, 3));
            let peer = |i: usize| format!("p{i}");
            let cmd = match pick(&mut rng, 20) {
                0..=2 => {
                    let mut r = rec(&format!("s{i}"), &peer(i), Some(["u", "v"][i % 2]));
                    if i == 7 {
                        r.face = Face::Classic;
                    }
                    r.seq = rng.random_range(0..4);
                    r.frames = (1..=r.seq)
                        .map(|q| (q, Bytes::from(vec![b'f'; 20])))
                        .collect();
                    Command::Register(r)
                }
                3..=7 => {
                    let private = (pick(&mut rng, 4) == 0).then(|| {
                        [
                            peer(pick(&mut rng, 8)).into(),
                            peer(pick(&mut rng, 8)).into(),
                        ]
                    });
                    Command::Join {
                        req: step,
                        session: s.into(),
                        room: room.into(),
                        meta: (pick(&mut rng, 2) == 0).then(|| "{\"m\":1}".into()),
                        limits: cap(pick(&mut rng, 4), [0, 80, 120][pick(&mut rng, 3)]),
                        private,
                    }
                }
                8 => Command::Leave {
                    session: s.into(),
                    room: room.into(),
                },
                9..=11 => Command::Publish {
                    req: (pick(&mut rng, 3) != 0).then_some(step),
                    room: room.into(),
                    to: (pick(&mut rng, 3) == 0).then(|| peer(pick(&mut rng, 8)).into()),
                    event: msg("px", "\"d\""),
                    local: (0..pick(&mut rng, 3))
                        .map(|_| format!("s{}", pick(&mut rng, 8)).into())
                        .collect(),
                    classic: rng.random_range(0..3),
                },
                12 | 13 => Command::Persist {
                    session: s.into(),
                    seq: rng.random_range(0..12),
                    body: Bytes::from(vec![b'b'; pick(&mut rng, 40)]),
                },
                14 => Command::Trim {
                    session: s.into(),
                    last_seq: rng.random_range(0..12),
                },
                15 => Command::Report {
                    to: NodeId::new(nodes[pick(&mut rng, 3)]),
                    req: step,
                    sessions: vec![s.into()],
                    classic: 1,
                },
                16 => Command::End { session: s.into() },
                17 => Command::Take {
                    req: step,
                    token: if pick(&mut rng, 5) == 0 {
                        "bad".into()
                    } else {
                        if let Some(n) = nodes.iter().position(|n| *n == node) {
                            home[i] = n;
                        }
                        format!("tok-{s}").into()
                    },
                    session: s.into(),
                    last_seq: rng.random_range(0..12),
                },
                18 => Command::Ring {
                    req: step,
                    call: format!("k{step}").into(),
                    user: ["u", "v", "w"][pick(&mut rng, 3)].into(),
                    except: s.into(),
                    body: Bytes::from_static(b"{}"),
                },
                _ if pick(&mut rng, 4) != 0 => Command::Heartbeat,
                _ => {
                    let mut mine = Vec::new();
                    for i in 0..8 {
                        if pick(&mut rng, 3) != 0 {
                            continue;
                        }
                        let mut r = rec(&format!("s{i}"), &peer(i), None);
                        r.rooms = vec![format!("r{}", pick(&mut rng, 3)).into()];
                        r.seq = 3;
                        r.frames = vec![(3, Bytes::from_static(b"x"))];
                        mine.push(r);
                    }
                    Command::Resync { sessions: mine }
                }
            };
            c.cmd(node, cmd).await;
        }
        let got = c.check().await;
        // The walk must reach the interesting cases, not only refusals.
        let mut kinds = std::collections::BTreeMap::new();
        for p in got.values().flatten() {
            let kind = match p {
                Push::JoinAnswer { outcome, .. } => match outcome {
                    SeatOutcome::Seated { .. } => "seated",
                    SeatOutcome::Full => "full",
                    SeatOutcome::Forbidden => "forbidden",
                },
                Push::Took { outcome, .. } => match outcome {
                    TakeOutcome::Taken(_) => "taken",
                    TakeOutcome::Gap(_) => "gap",
                    TakeOutcome::Unknown => "unknown",
                },
                Push::Deliver { .. } => "deliver",
                Push::Taken { .. } => "taken-away",
                Push::Ring { .. } => "ring",
                Push::Counted { .. } => "counted",
                Push::Resynced { .. } => "resynced",
                Push::Published { .. } => "published",
                _ => "other",
            };
            *kinds.entry(kind).or_insert(0) += 1;
        }
        eprintln!("seed {seed}: {kinds:?}");
        for k in [
            "seated",
            "full",
            "forbidden",
            "taken",
            "gap",
            "unknown",
            "deliver",
            "ring",
        ] {
            assert!(
                kinds.contains_key(k),
                "seed {seed} never got {k}: {kinds:?}"
            );
        }
    }
}
