//! The Lua store against the reference: the same commands, in the same
//! order, go to `switchboard_signal::cluster::store::Store` and to a real
//! Redis as 3 nodes; every node must receive the same pushes in the same
//! order, and the same answers (`Event::Applied`) to its `Persist`s and
//! `Resumed`s.

mod support;

use std::time::Duration;

use bytes::Bytes;
use switchboard_backplane::StoreConfig;
use switchboard_signal::cluster::{
    Command, NodeId, NodeMsg, Push, RoomEvent, SeatOutcome, SessionRecord, TakeOutcome,
};
use switchboard_signal::{CallEndReason, Face, MediaKind};

use support::cluster::{Cluster, cap, copies, join, msg, persist, private_join, rec, sfu_join};

fn outcomes(pushes: &[Push]) -> Vec<(u64, &SeatOutcome)> {
    pushes
        .iter()
        .filter_map(|p| match p {
            Push::JoinAnswer { req, outcome } => Some((*req, outcome)),
            _ => None,
        })
        .collect()
}

/// The join that makes a room decides its kind and, for an SFU room, its
/// media node (that join's node): two nodes racing to make it get one
/// answer, every later join the same, whatever it asks; a node without a
/// media socket makes no SFU room but joins one.
#[tokio::test]
async fn the_first_join_decides_the_kind_and_the_media_node() {
    let mut c = Cluster::new(StoreConfig::default(), &["a", "b", "c"]).await;
    c.cmd("a", Command::Register(rec("s1", "p1", None))).await;
    c.cmd("b", Command::Register(rec("s2", "p2", None))).await;
    c.cmd("c", Command::Register(rec("s3", "p3", None))).await;
    c.cmd("c", Command::Register(rec("s4", "p4", None))).await;
    // b and a race to make "r" an SFU room: b's command is applied first.
    c.cmd("b", sfu_join(1, "s2", "r", true)).await;
    c.cmd("a", sfu_join(2, "s1", "r", true)).await;
    // c has no media socket: it cannot make "x" an SFU room...
    c.cmd("c", sfu_join(3, "s3", "x", false)).await;
    // ...but joins "r", asking for mesh or not.
    c.cmd("c", join(4, "s3", "r", None, cap(0, 0))).await;
    c.cmd("c", sfu_join(5, "s4", "r", false)).await;
    // A mesh room stays one, and a call's room is a mesh room.
    c.cmd("a", join(6, "s1", "m", None, cap(0, 0))).await;
    c.cmd("b", sfu_join(7, "s2", "m", true)).await;
    c.cmd("a", {
        let mut j = private_join(8, "s1", "call", ["p1", "p2"]);
        if let Command::Join { media, relay, .. } = &mut j {
            *media = MediaKind::Sfu;
            *relay = true;
        }
        j
    })
    .await;
    // The room empties and is made again: the new first join decides.
    c.cmd(
        "a",
        Command::Leave {
            session: "s1".into(),
            room: "r".into(),
        },
    )
    .await;
    c.cmd(
        "b",
        Command::Leave {
            session: "s2".into(),
            room: "r".into(),
        },
    )
    .await;
    c.cmd(
        "c",
        Command::Leave {
            session: "s3".into(),
            room: "r".into(),
        },
    )
    .await;
    c.cmd(
        "c",
        Command::Leave {
            session: "s4".into(),
            room: "r".into(),
        },
    )
    .await;
    c.cmd("a", sfu_join(9, "s1", "r", true)).await;
    let got = c.check().await;
    let sfu_b = (MediaKind::Sfu, Some(NodeId::new("b")));
    let kind = |o: &SeatOutcome| match o {
        SeatOutcome::Seated {
            media, media_node, ..
        } => Some((*media, media_node.clone())),
        _ => None,
    };
    let a = outcomes(&got[&NodeId::new("a")]);
    let b = outcomes(&got[&NodeId::new("b")]);
    let cn = outcomes(&got[&NodeId::new("c")]);
    assert_eq!(kind(b[0].1), Some(sfu_b.clone()));
    assert_eq!(kind(a[0].1), Some(sfu_b.clone()));
    assert!(matches!(cn[0], (3, SeatOutcome::NoRelay)), "{cn:?}");
    assert_eq!(kind(cn[1].1), Some(sfu_b.clone()));
    assert_eq!(kind(cn[2].1), Some(sfu_b));
    assert_eq!(kind(a[1].1), Some((MediaKind::Mesh, None)));
    assert_eq!(kind(b[1].1), Some((MediaKind::Mesh, None)));
    assert_eq!(kind(a[2].1), Some((MediaKind::Mesh, None)));
    assert_eq!(kind(a[3].1), Some((MediaKind::Sfu, Some(NodeId::new("a")))));
}

/// The media node dies: each of its SFU rooms gets the node of its first
/// remaining member that has a media socket, or none; the members' nodes
/// hear of it right after the death.
#[tokio::test]
async fn a_dead_media_nodes_rooms_move_to_a_members_node() {
    let cfg = StoreConfig {
        node_timeout: Duration::from_millis(1500),
        ..StoreConfig::default()
    };
    let mut c = Cluster::new(cfg, &["a", "b", "c"]).await;
    c.register_all(&[
        ("a", "s1", "p1"),
        ("b", "s2", "p2"),
        ("c", "s3", "p3"),
        ("a", "s5", "p5"),
        ("c", "s6", "p6"),
        ("c", "s7", "p7"),
    ])
    .await;
    c.cmd("a", sfu_join(1, "s1", "r", true)).await;
    c.cmd("c", sfu_join(2, "s3", "r", false)).await;
    c.cmd("b", sfu_join(3, "s2", "r", true)).await;
    c.cmd("a", sfu_join(4, "s5", "q", true)).await;
    c.cmd("c", sfu_join(5, "s6", "q", false)).await;
    c.check().await;

    tokio::time::sleep(cfg.node_timeout + Duration::from_millis(100)).await;
    c.t += cfg.node_timeout;
    c.cmd("b", Command::Heartbeat).await;
    c.cmd("c", Command::Heartbeat).await;
    c.sweep("c").await;
    // Later joins get the new media node with their seat.
    c.cmd("c", sfu_join(6, "s7", "r", false)).await;
    // Sessions that move learn their SFU rooms' media nodes first: an
    // adoption of a's (r moved to b, q has none), a take of b's by c.
    c.cmd(
        "b",
        Command::Adopt {
            req: 7,
            dead: NodeId::new("a"),
        },
    )
    .await;
    c.cmd(
        "c",
        Command::Take {
            req: 8,
            session: "s2".into(),
            token: "tok-s2".into(),
            last_seq: 0,
        },
    )
    .await;
    let got = c.check().await;
    let moved = |node: &str| -> Vec<Push> {
        got[&NodeId::new(node)]
            .iter()
            .filter(|p| matches!(p, Push::MediaNode { .. }))
            .cloned()
            .collect()
    };
    let to_b = Push::MediaNode {
        room: "r".into(),
        node: Some(NodeId::new("b")),
    };
    assert_eq!(moved("b"), vec![to_b.clone()]);
    assert_eq!(
        moved("c"),
        vec![
            Push::MediaNode {
                room: "q".into(),
                node: None,
            },
            to_b,
        ]
    );
    let room_media = |node: &str| -> Vec<(String, Option<String>)> {
        got[&NodeId::new(node)]
            .iter()
            .filter_map(|p| match p {
                Push::RoomMedia { room, node } => {
                    Some((room.to_string(), node.as_ref().map(|n| n.0.to_string())))
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        room_media("b"),
        [
            ("r".to_owned(), Some("b".to_owned())),
            ("q".to_owned(), None)
        ]
    );
    assert_eq!(room_media("c"), [("r".to_owned(), Some("b".to_owned()))]);
    let cn = outcomes(&got[&NodeId::new("c")]);
    assert!(
        matches!(cn.last(), Some((6, SeatOutcome::Seated { media_node: Some(n), .. })) if &*n.0 == "b"),
        "{cn:?}"
    );
}

/// A graceful stop: the node's SFU rooms move at once, as at its death,
/// to another member's node with a media socket, never back to it.
#[tokio::test]
async fn a_media_node_going_away_hands_its_rooms_over() {
    let mut c = Cluster::new(StoreConfig::default(), &["a", "b", "c"]).await;
    c.register_all(&[
        ("a", "s1", "p1"),
        ("b", "s2", "p2"),
        ("c", "s3", "p3"),
        ("a", "s4", "p4"),
    ])
    .await;
    c.cmd("a", sfu_join(1, "s1", "r", true)).await;
    c.cmd("c", sfu_join(2, "s3", "r", false)).await;
    c.cmd("b", sfu_join(3, "s2", "r", true)).await;
    c.cmd("a", sfu_join(4, "s4", "q", true)).await;
    c.cmd("a", Command::MediaAway).await;
    c.cmd("c", sfu_join(5, "s3", "q", false)).await;
    let got = c.check().await;
    let to_b = Push::MediaNode {
        room: "r".into(),
        node: Some(NodeId::new("b")),
    };
    for n in ["a", "b", "c"] {
        assert!(got[&NodeId::new(n)].contains(&to_b), "{n}: {got:?}");
    }
    assert!(got[&NodeId::new("a")].contains(&Push::MediaNode {
        room: "q".into(),
        node: None,
    }));
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
    assert!(matches!(b[1], (5, SeatOutcome::Seated { peers, .. }) if peers.len() == 2));
    assert!(matches!(b[2], (7, SeatOutcome::Full)));
    assert!(matches!(cnode[1], (8, SeatOutcome::Seated { peers, .. }) if peers.len() == 1));
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
    assert!(matches!(b[0], (13, SeatOutcome::Seated { peers, .. }) if peers.len() == 1));
    assert!(matches!(b[1], (17, SeatOutcome::Seated { peers, .. }) if peers.len() == 2));
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
    c.cmd("b", Command::Register(rec("s6", "p6", None))).await;
    // Another session of the sender's peer id: the sender's own.
    c.cmd("b", Command::Register(rec("s7", "p1", None))).await;
    for (i, (node, s)) in [
        ("a", "s1"),
        ("a", "s5"),
        ("b", "s2"),
        ("c", "s3"),
        ("b", "s6"),
        ("b", "s7"),
    ]
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
            local: local.iter().map(|s| ((*s).into(), 0)).collect(),
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
            sessions: copies(&[("s2", 0)]),
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
            sessions: copies(&[("s2", 0)]),
            classic: 0,
        },
    )
    .await;
    c.cmd(
        "c",
        Command::Report {
            to: NodeId::new("a"),
            // s2 is c's now, in its next move; s3's copy of another move
            // and a's s1 are not counted.
            req: 14,
            sessions: copies(&[("s2", 1), ("s3", 0), ("s1", 0), ("s3", 7)]),
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
            sessions: Vec::new(),
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
    // Each node is named its very recipients; the sender's own peer (a
    // member on b as well) never is.
    let b = &got[&NodeId::new("b")];
    let delivered: Vec<_> = b
        .iter()
        .filter_map(|p| match p {
            Push::Deliver {
                req: Some(req),
                sessions,
                ..
            } => Some((*req, sessions.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(delivered[0], (10, vec!["s2".into(), "s6".into()]));
    assert!(delivered.iter().all(|(_, s)| !s.contains(&"s7".into())));
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
async fn persist_trim_bounds_take_and_renumbering() {
    let cfg = StoreConfig {
        replay_frames: 3,
        replay_bytes: 25,
        ..StoreConfig::default()
    };
    let mut c = Cluster::new(cfg, &["a", "b", "c"]).await;
    c.cmd("a", Command::Register(rec("s1", "p1", Some("u"))))
        .await;
    c.cmd("a", Command::Register(rec("s1", "dup", None))).await;
    for seq in 1..=5 {
        c.cmd("a", persist("s1", 0, seq, &[b'x'; 10], true)).await;
    }
    // Not the next seq (behind, then a skip), another move's copy, not
    // the owner: refused.
    c.cmd("a", persist("s1", 0, 3, b"old", true)).await;
    c.cmd("a", persist("s1", 0, 7, b"skip", true)).await;
    c.cmd("a", persist("s1", 1, 6, b"epoch", true)).await;
    c.cmd("b", persist("s1", 0, 6, b"not b's", true)).await;
    c.cmd(
        "a",
        Command::Trim {
            session: "s1".into(),
            last_seq: 4,
        },
    )
    .await;
    c.cmd("a", persist("s1", 0, 6, b"\0\xff:-1:\r\n", true))
        .await;
    c.cmd("a", persist("s1", 0, 7, b"", true)).await;
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
    // Covered: the taker's copy is move 2, based at seq 7.
    c.cmd("c", take(4, "s1", "tok-s1", 4)).await;
    c.cmd("c", persist("s1", 2, 8, b"unsent", false)).await;
    // The client had 9 (the old node sent frames it never wrote): what
    // was kept since the base follows it, 8 becoming 10.
    c.cmd("c", take(5, "s1", "tok-s1", 9)).await;
    c.cmd(
        "c",
        Command::Resumed {
            session: "s1".into(),
            epoch: 2,
            last_seq: 11,
            seq: 11,
        },
    )
    .await;
    c.cmd(
        "c",
        Command::Resumed {
            session: "s1".into(),
            epoch: 3,
            last_seq: 11,
            seq: 11,
        },
    )
    .await;
    c.cmd("c", persist("s1", 3, 12, &[b'y'; 30], true)).await;
    c.cmd("c", take(6, "s1", "tok-s1", 0)).await;
    c.cmd("a", persist("s1", 0, 8, b"late", true)).await;
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
    c.cmd("a", persist("s4", 0, 1, &[b'a'; 10], true)).await;
    c.cmd("a", persist("s4", 0, 2, &[b'b'; 15], true)).await;
    c.cmd("b", take(12, "s4", "tok-s4", 0)).await;
    let want_a = [
        [true; 5].as_slice(),
        &[false, false, false, true, true, false, true, true],
    ]
    .concat();
    assert_eq!(c.applied[&NodeId::new("a")], want_a);
    assert_eq!(c.applied[&NodeId::new("b")], [false]);
    assert_eq!(c.applied[&NodeId::new("c")], [true, false, true, true]);
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
    let seqs = |r: &SessionRecord| r.frames.iter().map(|f| f.0).collect::<Vec<_>>();
    let b = took("b");
    assert_eq!(b[0], TakeOutcome::Unknown);
    assert_eq!(b[1], TakeOutcome::Unknown);
    assert!(matches!(&b[2], TakeOutcome::Gap(r) if seqs(r) == [5, 6, 7] && r.epoch == 1));
    assert_eq!(b[3], TakeOutcome::Unknown);
    assert!(matches!(&b[4], TakeOutcome::Gap(_)));
    assert!(
        matches!(&b[5], TakeOutcome::Taken(r) if seqs(r) == [5, 6] && r.seq == 12 && r.base == Some(12))
    );
    assert_eq!(b[6], TakeOutcome::Unknown);
    assert!(matches!(&b[7], TakeOutcome::Taken(r) if r.frames.len() == 2));
    let cn = took("c");
    assert!(
        matches!(&cn[0], TakeOutcome::Taken(r) if seqs(r) == [5, 6, 7] && r.epoch == 2 && r.base == Some(7))
    );
    assert!(
        matches!(&cn[1], TakeOutcome::Taken(r) if seqs(r) == [10] && r.seq == 10 && r.epoch == 3 && r.base == Some(10))
    );
    assert!(
        matches!(&cn[2], TakeOutcome::Gap(r) if seqs(r) == [12] && r.epoch == 4 && r.base.is_none())
    );
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
    c.cmd("a", persist("s1", 0, 2, b"dead", true)).await;
    // The adopter now owns s1, in its next move: its frames and rooms went
    // with it.
    c.cmd(
        "b",
        Command::Publish {
            req: Some(9),
            room: "r".into(),
            to: None,
            event: msg("p3", "1"),
            local: copies(&[("s1", 1), ("s3", 0)]),
            classic: 0,
        },
    )
    .await;
    // Kept for no connection: numbered for now only.
    c.cmd("b", persist("s1", 1, 2, b"adopted", false)).await;
    assert_eq!(c.applied[&NodeId::new("a")], [false]);
    assert_eq!(c.applied[&NodeId::new("b")], [true]);
    let got = c.check().await;
    assert_eq!(got[&NodeId::new("a")], vec![Push::Dead]);
    assert!(got[&NodeId::new("b")].contains(&Push::NodeDied {
        node: NodeId::new("a")
    }));
    // Then the moved sessions' rooms are rerouted: their members' nodes
    // drop their routes (b first: it owns them now).
    assert!(got[&NodeId::new("b")].contains(&Push::Rerouted { room: "r".into() }));
    let adopted = got[&NodeId::new("b")]
        .iter()
        .find(|p| matches!(p, Push::Adopted { .. }));
    assert!(matches!(adopted,
        Some(Push::Adopted { sessions, .. }) if sessions.len() == 2
            && sessions[0].frames.len() == 1
            && sessions[0].epoch == 1
            && sessions[0].base == Some(1)));
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
            generation: Some(1),
        },
    )
    .await;
    c.cmd("a", Command::Register(rec("s5", "p5", None))).await;
    c.cmd("a", join(10, "s5", "r", Some("{}"), cap(0, 0))).await;
    // b resyncs with less than the store gives it: s1 left r meanwhile,
    // s2 ended; one it never had in a room is lost, and one it started
    // while cut off is new.
    let mut s1 = rec("s1", "p1", Some("u"));
    s1.epoch = 1;
    s1.seq = 4;
    s1.base = Some(2);
    s1.frames = vec![
        (3, Bytes::from_static(b"three")),
        (4, Bytes::from_static(b"four")),
    ];
    let mut s3 = rec("s3", "p3", None);
    s3.rooms = vec!["r".into()];
    let mut s9 = rec("s9", "p9", None);
    s9.rooms = vec!["r".into()];
    c.cmd(
        "b",
        Command::Resync {
            sessions: vec![s1, s3, rec("s8", "p8", None), s9],
            generation: Some(1),
        },
    )
    .await;
    // The client had 6: the frames after the base follow it.
    c.cmd(
        "c",
        Command::Take {
            req: 11,
            session: "s1".into(),
            token: "tok-s1".into(),
            last_seq: 6,
        },
    )
    .await;
    c.cmd(
        "c",
        Command::Take {
            req: 12,
            session: "s8".into(),
            token: "tok-s8".into(),
            last_seq: 0,
        },
    )
    .await;
    let got = c.check().await;
    assert!(got[&NodeId::new("a")].contains(&Push::Resynced {
        lost: vec!["s1".into(), "s2".into()],
        generation: 1,
    }));
    assert!(got[&NodeId::new("b")].contains(&Push::Resynced {
        lost: vec!["s9".into()],
        generation: 1,
    }));
    let took: Vec<_> = got[&NodeId::new("c")]
        .iter()
        .filter_map(|p| match p {
            Push::Took { outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect();
    assert!(matches!(took[0],
        TakeOutcome::Taken(r) if r.frames.iter().map(|f| f.0).collect::<Vec<_>>() == [7, 8]
            && r.seq == 8 && r.rooms.is_empty() && r.epoch == 2));
    assert!(matches!(took[1], TakeOutcome::Taken(r) if r.epoch == 1));
}

/// A store that lost everything (another generation) takes a node's
/// sessions back as they were, seats included, and tells nobody; one
/// already there is lost.
#[tokio::test]
async fn a_resync_naming_another_generation_restores() {
    let mut c = Cluster::with_generation(StoreConfig::default(), &["a", "b", "c"], 5).await;
    c.cmd("a", Command::Register(rec("s1", "p1", None))).await;
    c.cmd("b", Command::Register(rec("s2", "p2", None))).await;
    c.cmd("a", join(1, "s1", "r", None, cap(0, 0))).await;
    c.cmd("b", join(2, "s2", "r", Some("{\"m\":2}"), cap(0, 0)))
        .await;
    let mut s1 = rec("s1", "p1", None);
    s1.rooms = vec!["r".into()];
    c.cmd(
        "a",
        Command::Resync {
            sessions: vec![s1.clone()],
            generation: Some(5),
        },
    )
    .await;
    // c was cut off from an older Redis: its s3 sat in r and q.
    let mut s3 = rec("s3", "p3", Some("u"));
    s3.rooms = vec!["r".into(), "q".into()];
    s3.seq = 3;
    s3.base = Some(3);
    s3.epoch = 4;
    s3.frames = vec![(3, Bytes::from_static(b"three"))];
    c.cmd(
        "c",
        Command::Resync {
            sessions: vec![s3, s1],
            generation: Some(9),
        },
    )
    .await;
    c.cmd(
        "b",
        Command::Publish {
            req: Some(3),
            room: "r".into(),
            to: None,
            event: msg("p2", "\"hi\""),
            local: Vec::new(),
            classic: 0,
        },
    )
    .await;
    c.cmd(
        "c",
        Command::Resumed {
            session: "s3".into(),
            epoch: 4,
            last_seq: 5,
            seq: 5,
        },
    )
    .await;
    c.cmd("c", persist("s3", 4, 6, b"six", true)).await;
    c.cmd("a", join(4, "s1", "q", None, cap(0, 0))).await;
    c.cmd("a", Command::Register(rec("s4", "p4", None))).await;
    c.cmd("a", join(5, "s4", "q", None, cap(2, 0))).await;
    c.cmd("b", join(6, "s2", "q", None, cap(3, 0))).await;
    // The restored seats are in the admin views.
    c.cmd("c", Command::Rooms { req: 8 }).await;
    c.cmd(
        "c",
        Command::Room {
            req: 9,
            room: "q".into(),
        },
    )
    .await;
    c.cmd(
        "c",
        Command::Take {
            req: 7,
            session: "s3".into(),
            token: "tok-s3".into(),
            last_seq: 4,
        },
    )
    .await;
    assert_eq!(c.applied[&NodeId::new("c")], [true, true]);
    let got = c.check().await;
    assert_eq!(
        got[&NodeId::new("c")][0],
        Push::Resynced {
            lost: vec!["s1".into()],
            generation: 5,
        }
    );
    assert!(got[&NodeId::new("b")].contains(&Push::Published {
        req: 3,
        counted: 0,
        nodes: vec![NodeId::new("a"), NodeId::new("c")],
    }));
    assert!(got[&NodeId::new("b")].contains(&Push::JoinAnswer {
        req: 6,
        outcome: SeatOutcome::Seated {
            peers: vec![("p3".into(), None), ("p1".into(), None)],
            media: MediaKind::Mesh,
            media_node: None,
        }
    }));
    let views: Vec<_> = got[&NodeId::new("c")]
        .iter()
        .filter_map(|p| match p {
            Push::Rooms { rooms, .. } => Some(rooms.len()),
            Push::Room { room: Some(r), .. } => Some(r.members.len()),
            _ => None,
        })
        .collect();
    assert_eq!(views, [2, 3], "rooms q and r; q holds p3, p1 and p2");
    assert!(matches!(got[&NodeId::new("c")].last(),
        Some(Push::Took { outcome: TakeOutcome::Taken(r), .. })
            if r.frames.iter().map(|f| f.0).collect::<Vec<_>>() == [6] && r.epoch == 5));
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

#[tokio::test]
async fn admin_views_and_kicks() {
    let cfg = StoreConfig {
        node_timeout: Duration::from_millis(1500),
        ..StoreConfig::default()
    };
    let mut c = Cluster::new(cfg, &["a", "b", "c"]).await;
    c.cmd("a", Command::Register(rec("s1", "p1", Some("u"))))
        .await;
    c.cmd("b", Command::Register(rec("s2", "p2", None))).await;
    c.cmd("b", Command::Register(rec("s3", "p3", None))).await;
    c.cmd("c", Command::Register(rec("s4", "p4", None))).await;
    c.cmd("a", join(1, "s1", "r", Some("{\"n\":1}"), cap(0, 0)))
        .await;
    // The room and its first seat grow older than the next seats.
    let gap = Duration::from_millis(200);
    tokio::time::sleep(gap).await;
    c.t += gap;
    c.cmd("b", join(2, "s2", "r", None, cap(0, 0))).await;
    c.cmd("b", join(3, "s3", "r", None, cap(0, 0))).await;
    c.cmd("c", join(4, "s4", "q", None, cap(0, 0))).await;
    c.cmd("c", Command::Rooms { req: 5 }).await;
    let room = |req: u64, room: &str| Command::Room {
        req,
        room: room.into(),
    };
    c.cmd("c", room(6, "r")).await;
    c.cmd("c", room(7, "nope")).await;
    let kick = |req: u64, room: &str, peer: Option<&str>| Command::Kick {
        req,
        room: room.into(),
        peer: peer.map(Into::into),
    };
    // A peer on b, kicked from a: b is told, and gives the seat back.
    c.cmd("a", kick(8, "r", Some("p2"))).await;
    c.cmd("a", kick(9, "r", Some("nobody"))).await;
    c.cmd("a", kick(10, "nope", None)).await;
    c.cmd(
        "b",
        Command::Leave {
            session: "s2".into(),
            room: "r".into(),
        },
    )
    .await;
    let got = c.check().await;
    let a = &got[&NodeId::new("a")];
    for (req, kicked) in [(8, Some(1)), (9, Some(0)), (10, None)] {
        assert!(a.contains(&Push::Kicked { req, kicked }), "{a:?}");
    }
    assert!(got[&NodeId::new("b")].contains(&Push::Kick {
        room: "r".into(),
        sessions: vec!["s2".into()],
    }));
    let cn = &got[&NodeId::new("c")];
    let Some(Push::Rooms { rooms, .. }) = cn.iter().find(|p| matches!(p, Push::Rooms { .. }))
    else {
        panic!("{cn:?}");
    };
    let listed: Vec<_> = rooms.iter().map(|r| (&*r.room, r.peers)).collect();
    assert_eq!(listed, [("q", 1), ("r", 3)]);
    // Redis' ages, on its own clock: r is older than the gap, q is not.
    let gap_ms = gap.as_millis() as u64;
    assert!(
        rooms[1].age_ms >= gap_ms && rooms[1].age_ms < 60_000,
        "{rooms:?}"
    );
    assert!(rooms[0].age_ms < rooms[1].age_ms, "{rooms:?}");
    let Some(Push::Room { room: Some(r), .. }) =
        cn.iter().find(|p| matches!(p, Push::Room { req: 6, .. }))
    else {
        panic!("{cn:?}");
    };
    let members: Vec<_> = r
        .members
        .iter()
        .map(|m| (&*m.peer, m.user.as_deref(), m.meta.as_deref(), &*m.node.0))
        .collect();
    assert_eq!(
        members,
        [
            ("p1", Some("u"), Some("{\"n\":1}"), "a"),
            ("p2", None, None, "b"),
            ("p3", None, None, "b"),
        ]
    );
    assert!(r.members[0].age_ms >= gap_ms && r.members[1].age_ms < r.members[0].age_ms);
    assert!(cn.contains(&Push::Room { req: 7, room: None }));

    // b dies: closing r unseats its member in the store (`bye` to a) and
    // tells a to kick its own.
    tokio::time::sleep(cfg.node_timeout + Duration::from_millis(100)).await;
    c.t += cfg.node_timeout;
    c.cmd("a", Command::Heartbeat).await;
    c.cmd("c", Command::Heartbeat).await;
    c.sweep("c").await;
    c.cmd("a", kick(11, "r", None)).await;
    c.cmd("a", Command::Rooms { req: 12 }).await;
    let got = c.check().await;
    let a = &got[&NodeId::new("a")];
    let tail = &a[a.len() - 4..];
    assert!(
        matches!(&tail[0], Push::Deliver { event: RoomEvent::Bye { peer }, .. } if &**peer == "p3"),
        "{a:?}"
    );
    assert_eq!(
        tail[1],
        Push::Kick {
            room: "r".into(),
            sessions: vec!["s1".into()],
        }
    );
    assert_eq!(
        tail[2],
        Push::Kicked {
            req: 11,
            kicked: Some(2),
        }
    );
    assert!(matches!(&tail[3], Push::Rooms { req: 12, rooms } if rooms.len() == 2));
}

fn append(session: &str, epoch: u32, seq: u64, body: &[u8], keep: Option<u32>) -> Command {
    Command::Append {
        session: session.into(),
        epoch,
        seq,
        body: Bytes::copy_from_slice(body),
        keep,
    }
}

#[tokio::test]
async fn appends_in_one_round_keep_what_one_at_a_time_would() {
    let cfg = StoreConfig {
        replay_frames: 8,
        replay_bytes: 1000,
        ..StoreConfig::default()
    };
    let mut c = Cluster::new(cfg, &["a", "b", "c"]).await;
    c.cmd("a", Command::Register(rec("s1", "p1", None))).await;
    c.cmd("a", Command::Register(rec("s2", "p2", None))).await;
    // One round: two sessions' appends interleaved, cuts between them, a
    // copy of another move (written where nobody reads), and a trim (it
    // reads the frames: what follows it runs after it).
    c.queue("a", append("s1", 0, 1, b"one", None));
    c.queue("a", append("s2", 0, 1, b"uno", None));
    c.queue("a", append("s1", 0, 2, b"two", Some(1)));
    c.queue("a", append("s1", 0, 3, b"three", None));
    c.queue("a", append("s2", 0, 2, b"dos", None));
    c.queue("a", append("s1", 1, 4, b"not this move", None));
    c.queue("a", append("s1", 0, 4, b"four", None));
    c.queue(
        "a",
        Command::Trim {
            session: "s2".into(),
            last_seq: 1,
        },
    );
    c.queue("a", append("s2", 0, 3, b"tres", Some(2)));
    c.flush("a").await;
    let take = |req: u64, s: &str, last_seq: u64| Command::Take {
        req,
        session: s.into(),
        token: format!("tok-{s}").into(),
        last_seq,
    };
    // s1 keeps 2, 3 and 4 (the cut at 2 kept one); s2 keeps 2 and 3.
    let (_, pushes) = c.cmd("b", take(1, "s1", 1)).await;
    assert!(pushes.iter().any(|(_, p)| matches!(p,
        Push::Took { outcome: TakeOutcome::Taken(r), .. }
            if r.frames.iter().map(|f| f.0).collect::<Vec<_>>() == [2, 3, 4] && r.seq == 4)));
    c.cmd("b", take(2, "s2", 1)).await;
    // The old copy's late appends and a drop of them change nothing.
    c.cmd("a", append("s1", 0, 5, b"late", None)).await;
    c.cmd(
        "a",
        Command::Drop {
            session: "s1".into(),
            epoch: 0,
        },
    )
    .await;
    c.cmd(
        "b",
        Command::Drop {
            session: "s1".into(),
            epoch: 1,
        },
    )
    .await;
    c.cmd("b", append("s1", 1, 5, b"five", None)).await;
    c.cmd("c", take(3, "s1", 2)).await;
    let got = c.check().await;
    let took: Vec<_> = got[&NodeId::new("c")]
        .iter()
        .filter_map(|p| match p {
            Push::Took {
                outcome: TakeOutcome::Taken(r),
                ..
            } => Some(r.frames.iter().map(|f| f.0).collect::<Vec<_>>()),
            _ => None,
        })
        .collect();
    assert_eq!(took, [vec![3, 4, 5]]);
}

#[tokio::test]
async fn routes_reroutes_and_forwards() {
    let mut c = Cluster::new(StoreConfig::default(), &["a", "b", "c"]).await;
    let members = [
        ("a", "s1", "p1"),
        ("b", "s2", "p2"),
        ("b", "s3", "p3"),
        ("c", "s4", "p4"),
    ];
    c.register_all(&members).await;
    for (node, s, _) in members {
        c.cmd(node, join(1, s, "r", None, cap(0, 0))).await;
    }
    let (_, pushes) = c.cmd("a", Command::Route { room: "r".into() }).await;
    assert!(pushes.contains(&(
        NodeId::new("a"),
        Push::Route {
            room: "r".into(),
            nodes: vec![
                (
                    NodeId::new("b"),
                    vec![("s2".into(), "p2".into()), ("s3".into(), "p3".into())]
                ),
                (NodeId::new("c"), vec![("s4".into(), "p4".into())]),
            ],
        }
    )));
    c.cmd(
        "a",
        Command::Route {
            room: "none".into(),
        },
    )
    .await;
    // Forwards of one round to one node go out as one batch, in order.
    for i in 0..3 {
        c.queue(
            "a",
            Command::Forward {
                to: NodeId::new("b"),
                room: "r".into(),
                event: msg("p1", &i.to_string()),
                sessions: vec!["s2".into(), "s3".into()],
            },
        );
        c.queue(
            "a",
            Command::Forward {
                to: NodeId::new("c"),
                room: "r".into(),
                event: msg("p1", &i.to_string()),
                sessions: vec!["s4".into()],
            },
        );
    }
    c.queue(
        "a",
        Command::Leave {
            session: "s1".into(),
            room: "r".into(),
        },
    );
    c.queue(
        "a",
        Command::Forward {
            to: NodeId::new("c"),
            room: "r".into(),
            event: msg("p1", "\"after\""),
            sessions: vec!["s4".into()],
        },
    );
    c.flush("a").await;
    // A take moves s2 to c: b and c (the nodes of r's members) drop their
    // routes; so does an adoption.
    let (_, pushes) = c
        .cmd(
            "c",
            Command::Take {
                req: 2,
                session: "s2".into(),
                token: "tok-s2".into(),
                last_seq: 0,
            },
        )
        .await;
    let rerouted: Vec<_> = pushes
        .iter()
        .filter(|(_, p)| matches!(p, Push::Rerouted { .. }))
        .map(|(n, _)| n.0.to_string())
        .collect();
    assert_eq!(rerouted, ["c", "b"]);
    let got = c.check().await;
    let to_c: Vec<_> = got[&NodeId::new("c")]
        .iter()
        .filter_map(|p| match p {
            Push::Deliver { event, .. } => Some(event.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        to_c,
        [
            msg("p1", "0"),
            msg("p1", "1"),
            msg("p1", "2"),
            RoomEvent::Bye { peer: "p1".into() },
            msg("p1", "\"after\""),
        ]
    );
}
