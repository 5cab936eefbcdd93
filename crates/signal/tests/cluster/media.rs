//! SFU rooms across nodes (PROTOCOL.md §7, docs/scaling.md "SFU rooms and
//! the cluster"): the store names one media node per room, and the peers
//! of the other nodes reach its SFU over the backplane.

use serde_json::json;
use switchboard_signal::{AdminReply, AdminRequest, Config, MediaKind, MediaOutput};

use crate::sim::Sim;

/// `c` joins `room` asking for an SFU room (`id` 1); the answer is then in.
fn join_sfu(sim: &mut Sim, c: usize, room: &str) {
    sim.send(
        c,
        json!({"type": "join", "room": room, "media": "sfu", "id": 1}),
    );
    sim.settle();
}

fn peers_joined(out: &[MediaOutput]) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = out
        .iter()
        .filter_map(|m| match m {
            MediaOutput::Joined { peer, conn, .. } => Some((peer.clone(), conn.is_some())),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[test]
fn two_nodes_racing_to_make_an_sfu_room_get_one_media_node() {
    for seed in 1..=6 {
        let mut sim = Sim::new(3, Config::default(), seed);
        sim.relay(0, true);
        sim.relay(1, true);
        let a = sim.connect(0, Default::default());
        let b = sim.connect(1, Default::default());
        let c = sim.connect(2, Default::default());
        // a and b ask at the same moment; the bus delays decide.
        for x in [a, b] {
            sim.send(
                x,
                json!({"type": "join", "room": "r", "media": "sfu", "id": 1}),
            );
        }
        sim.settle();
        for x in [a, b] {
            let j = sim.reply(x, 1);
            assert_eq!((&j["type"], &j["media"]), (&json!("joined"), &json!("sfu")));
        }
        let (kind, node) = sim.store.media_of("r").expect("the room");
        assert_eq!(kind, MediaKind::Sfu);
        let m = match node.as_ref().map(|n| &*n.0) {
            Some("n0") => 0,
            Some("n1") => 1,
            other => panic!("seed {seed}: media node {other:?}"),
        };
        // c's node has no media socket: it joins, without asking, the
        // room's kind.
        let jc = sim.join(c, "r", 1);
        assert_eq!(jc["media"], "sfu", "{jc}");
        sim.settle();
        // Only the media node's SFU hears of the peers: its own with a
        // connection, the others' without.
        let want = {
            let mut w = vec![
                (sim.peer(a), m == 0),
                (sim.peer(b), m == 1),
                (sim.peer(c), false),
            ];
            w.sort();
            w
        };
        assert_eq!(peers_joined(&sim.media(m)), want, "seed {seed}");
        assert!(sim.media(1 - m).is_empty() && sim.media(2).is_empty());

        // c's offer reaches the media node's SFU as a local one would.
        let pc = sim.peer(c);
        let offer = json!({"kind": "offer", "sdp": "v=0\r\n"});
        sim.send(
            c,
            json!({"type": "media", "room": "r", "data": offer, "id": 2}),
        );
        sim.settle();
        let got = sim.media(m);
        assert_eq!(got.len(), 1, "{got:?}");
        match &got[0] {
            MediaOutput::Signal { room, peer, data } => {
                assert_eq!((room.as_str(), peer.as_str()), ("r", pc.as_str()));
                assert_eq!(
                    serde_json::from_str::<serde_json::Value>(data.get()).ok(),
                    Some(offer)
                );
            }
            other => panic!("{other:?}"),
        }
        // Its answer comes back as a sequenced `media` frame on c's node,
        // and so does an error.
        let answer = json!({"kind": "answer", "sdp": "v=1\r\n"});
        assert!(sim.sfu_says(m, "r", &pc, answer.clone()));
        assert!(sim.sfu_error(m, "r", &pc, "media: bad SDP"));
        assert!(!sim.sfu_says(m, "r", "nobody", answer.clone()));
        sim.settle();
        let fresh = sim.fresh(c);
        let media: Vec<_> = fresh.iter().filter(|v| v["type"] == "media").collect();
        assert_eq!(media.len(), 1, "{fresh:?}");
        assert_eq!(media[0]["data"], answer);
        assert_eq!(media[0]["room"], "r");
        assert!(media[0]["seq"].is_u64());
        let errors: Vec<_> = fresh.iter().filter(|v| v["type"] == "error").collect();
        assert_eq!(errors.len(), 1, "{fresh:?}");
        assert_eq!(
            (&errors[0]["code"], &errors[0]["room"]),
            (&json!("bad_request"), &json!("r"))
        );
        // c leaves: the media node's SFU lets it go.
        sim.send(c, json!({"type": "leave", "room": "r", "id": 3}));
        sim.settle();
        assert_eq!(
            sim.media(m),
            vec![MediaOutput::Left {
                room: "r".into(),
                peer: pc.clone()
            }]
        );
        // A signal for a peer that left goes nowhere.
        assert!(!sim.sfu_says(m, "r", &pc, answer));
    }
}

#[test]
fn a_node_without_a_media_socket_makes_no_sfu_room() {
    let mut sim = Sim::new(2, Config::default(), 3);
    sim.relay(0, true);
    let a = sim.connect(0, Default::default());
    let b = sim.connect(1, Default::default());
    join_sfu(&mut sim, b, "s");
    let refused = sim.reply(b, 1);
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("media")),
        "{refused}"
    );
    assert_eq!(sim.store.media_of("s"), None);
    // A mesh room is fine, and a's node makes the SFU room b then joins.
    assert_eq!(sim.join(b, "m", 2)["media"], "mesh");
    join_sfu(&mut sim, a, "s");
    assert_eq!(sim.reply(a, 1)["media"], "sfu");
    assert_eq!(sim.join(b, "s", 3)["media"], "sfu");
    // The admin API of any node says each room's kind.
    match sim.admin(1, AdminRequest::Rooms) {
        Ok(AdminReply::Rooms(rooms)) => {
            let kinds: Vec<(&str, MediaKind)> =
                rooms.iter().map(|r| (r.room.as_str(), r.media)).collect();
            assert_eq!(kinds, [("m", MediaKind::Mesh), ("s", MediaKind::Sfu)]);
        }
        other => panic!("{other:?}"),
    }
    match sim.admin(1, AdminRequest::Room { room: "s".into() }) {
        Ok(AdminReply::Room(r)) => assert_eq!(r.media, MediaKind::Sfu),
        other => panic!("{other:?}"),
    }
    // `media` outside an SFU room is still refused.
    sim.send(
        b,
        json!({"type": "media", "room": "m", "data": {"kind": "offer", "sdp": "v=0"}, "id": 4}),
    );
    sim.settle();
    assert_eq!(sim.reply(b, 4)["code"], "bad_request");

    // With `rooms.media = "sfu"` a join that asks nothing makes an SFU
    // room where it can, and asks for mesh to get one.
    let config = Config {
        default_media: MediaKind::Sfu,
        ..Config::default()
    };
    let mut sim = Sim::new(2, config, 4);
    sim.relay(0, true);
    let a = sim.connect(0, Default::default());
    let b = sim.connect(1, Default::default());
    assert_eq!(sim.join(a, "r", 1)["media"], "sfu");
    assert_eq!(sim.join(b, "q", 1)["code"], "unavailable");
    sim.send(
        b,
        json!({"type": "join", "room": "q", "media": "mesh", "id": 2}),
    );
    sim.settle();
    assert_eq!(sim.reply(b, 2)["media"], "mesh");
}

/// The media node dies: signaling goes on, the store names the node of the
/// first remaining member that has a media socket, every member hears
/// "media node lost", and its next offer lands on the new media node.
#[test]
fn when_the_media_node_dies_the_room_moves_to_a_members_node() {
    let mut sim = Sim::new(3, Config::default(), 5);
    sim.relay(0, true);
    sim.relay(1, true);
    let a = sim.connect(0, Default::default());
    let c = sim.connect(2, Default::default());
    let b = sim.connect(1, Default::default());
    join_sfu(&mut sim, a, "r");
    assert_eq!(sim.reply(a, 1)["media"], "sfu");
    // c (no media socket) before b: b's node is still the first that can.
    assert_eq!(sim.join(c, "r", 1)["media"], "sfu");
    assert_eq!(sim.join(b, "r", 1)["media"], "sfu");
    sim.settle();
    assert_eq!(peers_joined(&sim.media(0)).len(), 3);
    let (pb, pc) = (sim.peer(b), sim.peer(c));
    sim.fresh(b);
    sim.fresh(c);

    sim.kill(0);
    sim.run(crate::sim::NODE_TIMEOUT + std::time::Duration::from_secs(2));
    let (_, node) = sim.store.media_of("r").expect("the room lives on");
    assert_eq!(node.as_ref().map(|n| &*n.0), Some("n1"));
    for x in [b, c] {
        let fresh = sim.fresh(x);
        let errors: Vec<_> = fresh.iter().filter(|v| v["type"] == "error").collect();
        assert_eq!(errors.len(), 1, "{fresh:?}");
        assert_eq!(errors[0]["code"], "unavailable");
        assert_eq!(errors[0]["room"], "r");
        assert_eq!(errors[0]["message"], "media node lost");
        // Nobody left the room: a's `bye` comes only when its session ends.
        assert!(fresh.iter().all(|v| v["type"] != "left"), "{fresh:?}");
    }
    // The new media node's SFU has both, ready for their new offers, and
    // a's session too, which a node adopted (it starts afresh there).
    let pa = sim.peer(a);
    assert_eq!(peers_joined(&sim.media(1)), {
        let mut w = vec![(pa, false), (pb.clone(), true), (pc.clone(), false)];
        w.sort();
        w
    });
    assert!(sim.media(2).is_empty());
    sim.send(
        c,
        json!({"type": "media", "room": "r", "data": {"kind": "offer", "sdp": "v=0"}, "id": 2}),
    );
    sim.settle();
    assert!(
        matches!(&sim.media(1)[..], [MediaOutput::Signal { peer, .. }] if *peer == pc),
        "c's offer reaches n1"
    );
    assert!(sim.sfu_says(1, "r", &pc, json!({"kind": "answer", "sdp": "v=0"})));
    sim.settle();
    assert_eq!(sim.fresh_of(c, "media").len(), 1);

    // The last node with a media socket dies too: no media node is left,
    // and the members are told so; their `media` requests are refused.
    sim.kill(1);
    sim.run(crate::sim::NODE_TIMEOUT + std::time::Duration::from_secs(2));
    assert_eq!(sim.store.media_of("r").map(|m| m.1), Some(None));
    let errors = sim.fresh_of(c, "error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["code"], "unavailable");
    sim.send(
        c,
        json!({"type": "media", "room": "r", "data": {"kind": "offer", "sdp": "v=0"}, "id": 3}),
    );
    sim.settle();
    assert_eq!(sim.reply(c, 3)["code"], "unavailable");
}

/// A session resumed through another node keeps its SFU session (its media
/// runs on UDP, apart from signaling); its signaling goes through the new
/// node. A session adopted after its node died starts its media afresh.
#[test]
fn a_session_that_moves_keeps_its_media_on_the_media_node() {
    let mut sim = Sim::new(3, Config::default(), 9);
    sim.relay(0, true);
    let a = sim.connect(0, Default::default());
    let b = sim.connect(1, Default::default());
    join_sfu(&mut sim, a, "r");
    assert_eq!(sim.join(b, "r", 1)["media"], "sfu");
    sim.settle();
    assert_eq!(peers_joined(&sim.media(0)).len(), 2);
    let pb = sim.peer(b);

    // b's connection drops; it resumes on n2.
    sim.cut(b);
    sim.resume(b, 2);
    sim.settle();
    assert_eq!(
        sim.clients[b].unsequenced.last().map(|v| v["type"].clone()),
        Some(json!("resumed"))
    );
    // The SFU session goes on: no leave, no new join.
    assert_eq!(sim.media(0), Vec::new());
    let offer = json!({"kind": "offer", "sdp": "v=2"});
    sim.send(
        b,
        json!({"type": "media", "room": "r", "data": offer, "id": 2}),
    );
    sim.settle();
    assert!(
        matches!(&sim.media(0)[..], [MediaOutput::Signal { peer, .. }] if *peer == pb),
        "b's offer through n2 reaches n0"
    );
    let answer = json!({"kind": "answer", "sdp": "v=3"});
    assert!(sim.sfu_says(0, "r", &pb, answer.clone()));
    sim.settle();
    let media = sim.fresh_of(b, "media");
    assert_eq!(media.len(), 1);
    assert_eq!(media[0]["data"], answer);

    // n2 dies with b's session: a node adopts it, and its media starts
    // afresh (the old SFU session goes, a new one waits for an offer).
    sim.kill(2);
    sim.run(crate::sim::NODE_TIMEOUT + std::time::Duration::from_secs(2));
    let out = sim.media(0);
    assert_eq!(
        out,
        vec![
            MediaOutput::Left {
                room: "r".into(),
                peer: pb.clone()
            },
            MediaOutput::Joined {
                room: "r".into(),
                peer: pb.clone(),
                conn: None
            },
        ],
        "{out:?}"
    );
    // b resumes where its session went, and hears that its media is lost.
    let owner = sim
        .store
        .members("r")
        .into_iter()
        .find(|(p, _)| **p == *pb)
        .map(|(_, n)| n)
        .expect("adopted");
    let home = if &*owner.0 == "n0" { 0 } else { 1 };
    sim.resume(b, home);
    sim.settle();
    let errors = sim.fresh_of(b, "error");
    assert!(
        errors
            .iter()
            .any(|e| e["message"] == "media node lost" && e["room"] == "r"),
        "{errors:?}"
    );
    // It leaves: the SFU hears it, from the node that has it now.
    sim.send(b, json!({"type": "leave", "room": "r", "id": 3}));
    sim.settle();
    assert_eq!(
        sim.media(0),
        vec![MediaOutput::Left {
            room: "r".into(),
            peer: pb
        }]
    );
}

/// A graceful stop hands the node's SFU rooms over at once: no node
/// timeout to wait for.
#[test]
fn a_stopping_media_node_hands_its_rooms_over_at_once() {
    let mut sim = Sim::new(2, Config::default(), 11);
    sim.relay(0, true);
    sim.relay(1, true);
    let a = sim.connect(0, Default::default());
    let b = sim.connect(1, Default::default());
    join_sfu(&mut sim, a, "r");
    assert_eq!(sim.join(b, "r", 1)["media"], "sfu");
    sim.settle();
    sim.media(0);
    sim.fresh(b);
    sim.media_away(0);
    sim.settle();
    let (_, node) = sim.store.media_of("r").expect("the room");
    assert_eq!(node.as_ref().map(|n| &*n.0), Some("n1"));
    let errors = sim.fresh_of(b, "error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["message"], "media node lost");
    // Both peers are n1's SFU's now; a's too, through n0 while it lasts.
    assert_eq!(peers_joined(&sim.media(1)), {
        let mut w = vec![(sim.peer(a), false), (sim.peer(b), true)];
        w.sort();
        w
    });
    // n0 makes no SFU room any more.
    let c = sim.connect(0, Default::default());
    join_sfu(&mut sim, c, "q");
    assert_eq!(sim.reply(c, 1)["code"], "unavailable");
}
