//! The admin API across nodes (PROTOCOL.md §8: "in a cluster, room views
//! and kicks cover every node"): views come from the store, and a kick
//! reaches the node that holds the peer's session.

use std::time::Duration;

use serde_json::json;
use switchboard_signal::{AdminError, AdminId, AdminReply, AdminRequest, Config};

use crate::sim::{Sim, user};

fn kick(room: &str, peer: &str) -> AdminRequest {
    AdminRequest::Kick {
        room: room.into(),
        peer: peer.into(),
    }
}

/// Three nodes: `a` (alice, with a meta) on n0, `b` on n1, a Socket.IO
/// peer on n2, all in `r`; `d` on n1 alone in `s`. Returns the clients.
fn three_nodes() -> (Sim, [usize; 4]) {
    let mut sim = Sim::new(3, Config::default(), 5);
    let a = sim.connect(0, user("alice"));
    let b = sim.connect(1, Default::default());
    let c = sim.classic(2);
    let d = sim.connect(1, Default::default());
    sim.send(
        a,
        json!({"type":"join","room":"r","meta":{"name":"A"},"id":1}),
    );
    sim.settle();
    sim.run(Duration::from_secs(2));
    sim.join(b, "r", 1);
    sim.emit(c, "join", &[json!("r")], true);
    sim.settle();
    sim.join(d, "s", 1);
    for x in [a, b, d] {
        sim.fresh(x);
    }
    (sim, [a, b, c, d])
}

fn classic_peer(sim: &Sim, c: usize) -> String {
    let joined = sim.clients[c]
        .events
        .iter()
        .find(|e| e.event == "joined")
        .expect("joined");
    joined.args.to_values()[1].as_str().unwrap().to_owned()
}

#[test]
fn room_views_cover_every_node() {
    let (mut sim, [a, b, c, _]) = three_nodes();
    let start = sim.now;
    sim.run(Duration::from_secs(3));
    let cid = classic_peer(&sim, c);
    for node in 0..3 {
        let Ok(AdminReply::Rooms(rooms)) = sim.admin(node, AdminRequest::Rooms) else {
            panic!("rooms");
        };
        let listed: Vec<_> = rooms.iter().map(|r| (r.room.as_str(), r.peers)).collect();
        assert_eq!(listed, [("r", 3), ("s", 1)], "asked on n{node}");
        // `r` was made about 5 s ago, `s` about 3 s ago (bus delays apart).
        let age = |i: usize| sim.now.duration_since(rooms[i].created);
        assert!(age(0) >= Duration::from_millis(4900) && age(0) <= Duration::from_secs(6));
        assert!(age(1) >= Duration::from_millis(2900) && age(1) <= Duration::from_secs(4));
        assert!(rooms[0].created >= start - Duration::from_secs(6));
    }

    let Ok(AdminReply::Room(room)) = sim.admin(2, AdminRequest::Room { room: "r".into() }) else {
        panic!("room");
    };
    let peers: Vec<_> = room
        .peers
        .iter()
        .map(|p| {
            (
                p.peer.clone(),
                p.user.clone(),
                p.meta.clone(),
                p.node.0.to_string(),
            )
        })
        .collect();
    assert_eq!(
        peers,
        [
            (
                sim.peer(a),
                Some("alice".into()),
                r#"{"name":"A"}"#.into(),
                "n0".into()
            ),
            (sim.peer(b), None, "{}".into(), "n1".into()),
            (cid, None, "{}".into(), "n2".into()),
        ]
    );
    // `a` joined about 2 s before `b`.
    let gap = room.peers[1].joined.duration_since(room.peers[0].joined);
    assert!(gap >= Duration::from_millis(1900) && gap <= Duration::from_millis(2100));
    assert_eq!(
        sim.admin(
            1,
            AdminRequest::Room {
                room: "nope".into()
            }
        ),
        Err(AdminError::NoSuchRoom)
    );
    // Looking changes nothing.
    for x in [a, b] {
        assert!(sim.fresh(x).is_empty());
    }
}

#[test]
fn a_kick_reaches_the_node_that_holds_the_peer() {
    let (mut sim, [a, b, c, d]) = three_nodes();
    let (pa, pb) = (sim.peer(a), sim.peer(b));
    let cid = classic_peer(&sim, c);

    // Asked on n2, the peer is on n1, a member on n0.
    assert_eq!(
        sim.admin(2, kick("r", &pb)),
        Ok(AdminReply::Kicked { peers: 1 })
    );
    let got = sim.fresh(b);
    let types: Vec<_> = got.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["error", "left"], "{got:?}");
    assert_eq!(got[0]["code"], "kicked");
    assert_eq!(got[0]["room"], "r");
    assert_eq!(got[1]["room"], "r");
    let bye = sim.fresh_of(a, "bye");
    assert_eq!(bye.len(), 1, "{bye:?}");
    assert_eq!(bye[0]["peer"], pb);
    let to_c: Vec<_> = sim.clients[c]
        .events
        .iter()
        .filter(|e| e.event == "bye")
        .map(|e| e.args.to_values())
        .collect();
    assert_eq!(to_c, [vec![json!("r"), json!(pb)]]);
    let members: Vec<String> = sim
        .store
        .members("r")
        .into_iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(members, [pa.clone(), cid.clone()]);
    // Its session stays, and so does its other room's neighbour.
    assert!(sim.fresh(d).is_empty());
    assert_eq!(sim.join(b, "r", 9)["type"], "joined");

    // A Socket.IO peer on n2, kicked from n0.
    assert_eq!(
        sim.admin(0, kick("r", &cid)),
        Ok(AdminReply::Kicked { peers: 1 })
    );
    let events: Vec<_> = sim.clients[c]
        .events
        .iter()
        .rev()
        .take(2)
        .map(|e| (e.event, e.args.to_values()))
        .collect();
    assert_eq!(events[1].0, "error");
    assert_eq!(events[1].1[0]["code"], "kicked");
    assert_eq!(events[0], ("leaved", vec![json!("r"), json!(cid)]));

    // Nobody of that id in the room, or no such room: 404.
    assert_eq!(sim.admin(1, kick("r", &cid)), Err(AdminError::NoSuchPeer));
    assert_eq!(sim.admin(1, kick("nope", &pa)), Err(AdminError::NoSuchRoom));
}

#[test]
fn closing_a_room_kicks_its_peers_on_every_node() {
    let (mut sim, [a, b, c, d]) = three_nodes();
    assert_eq!(
        sim.admin(1, AdminRequest::CloseRoom { room: "r".into() }),
        Ok(AdminReply::Kicked { peers: 3 })
    );
    for x in [a, b] {
        let kicked = sim.fresh_of(x, "error");
        assert_eq!(kicked.len(), 1, "{kicked:?}");
        assert_eq!(kicked[0]["code"], "kicked");
    }
    assert!(sim.clients[c].events.iter().any(|e| e.event == "leaved"));
    assert!(sim.store.members("r").is_empty());
    let Ok(AdminReply::Rooms(rooms)) = sim.admin(0, AdminRequest::Rooms) else {
        panic!("rooms");
    };
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].room, "s");
    assert!(sim.fresh(d).is_empty());
    // A fresh join finds the room empty.
    assert_eq!(sim.join(a, "r", 7)["peers"], json!([]));
}

#[test]
fn without_the_store_admin_requests_are_unavailable() {
    let (mut sim, [_, b, _, _]) = three_nodes();
    sim.partition(0);
    assert_eq!(
        sim.admin(0, AdminRequest::Rooms),
        Err(AdminError::Unavailable)
    );
    // A request in flight when the store goes away fails too, once.
    let (now, pb) = (sim.now, sim.peer(b));
    sim.nodes[1].core.admin(now, AdminId(99), kick("r", &pb));
    sim.partition(1);
    let answers: Vec<_> = sim
        .admin
        .iter()
        .filter(|(_, a)| a.id == AdminId(99))
        .map(|(_, a)| a.result.clone())
        .collect();
    assert_eq!(answers, [Err(AdminError::Unavailable)]);
    // Back: the kick that never reached the store did not happen.
    sim.heal(1);
    sim.settle();
    assert_eq!(sim.store.members("r").len(), 3);
    assert_eq!(
        sim.admin(1, kick("r", &pb)),
        Ok(AdminReply::Kicked { peers: 1 })
    );
}
