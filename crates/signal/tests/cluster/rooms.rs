//! Rooms, messages and acks across nodes.

use serde_json::json;
use switchboard_signal::Config;

use crate::sim::Sim;

#[test]
fn a_room_spans_nodes() {
    let mut sim = Sim::new(3, Config::default(), 1);
    let a = sim.connect(0, Default::default());
    let b = sim.connect(1, Default::default());
    let c = sim.connect(2, Default::default());
    let ja = sim.join(a, "lobby", 1);
    assert_eq!(ja["type"], "joined", "{ja}");
    assert_eq!(ja["peers"], json!([]));
    let jb = sim.join(b, "lobby", 1);
    assert_eq!(
        jb["peers"],
        json!([{"peer": sim.peer(a), "meta": {}}]),
        "{jb}"
    );
    let jc = sim.join(c, "lobby", 1);
    assert_eq!(jc["peers"].as_array().map(Vec::len), Some(2), "{jc}");
    // a heard of b and c, b of c.
    let oa = sim.fresh_of(a, "other_joined");
    assert_eq!(oa.len(), 2, "{oa:?}");
    assert_eq!(oa[0]["peer"], sim.peer(b));
    assert_eq!(sim.fresh_of(b, "other_joined").len(), 1);

    sim.send(
        a,
        json!({"type": "message", "room": "lobby", "data": {"x": 1}, "id": 2}),
    );
    sim.settle();
    assert_eq!(
        sim.reply(a, 2),
        json!({"type": "ack", "delivered": 2, "reply_to": 2, "seq": sim.reply(a, 2)["seq"]})
    );
    for x in [b, c] {
        let m = sim.fresh_of(x, "message");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0]["from"], sim.peer(a));
        assert_eq!(m[0]["data"], json!({"x": 1}));
    }
    // `to` a peer on another node, and one nobody has.
    let pc = sim.peer(c);
    sim.send(
        b,
        json!({"type": "message", "room": "lobby", "to": pc, "data": 7, "id": 3}),
    );
    sim.send(
        b,
        json!({"type": "message", "room": "lobby", "to": "nobody", "data": 7, "id": 4}),
    );
    sim.settle();
    assert_eq!(sim.reply(b, 3)["delivered"], 1);
    assert_eq!(sim.reply(b, 4)["code"], "no_such_peer");
    assert_eq!(sim.fresh_of(c, "message").len(), 1);
    assert!(sim.fresh_of(a, "message").is_empty());

    // Leaving tells the others on every node.
    sim.send(c, json!({"type": "leave", "room": "lobby", "id": 5}));
    sim.settle();
    assert_eq!(sim.reply(c, 5)["type"], "left");
    for x in [a, b] {
        let bye = sim.fresh_of(x, "bye");
        assert_eq!(bye.len(), 1, "{bye:?}");
        assert_eq!(bye[0]["peer"], pc);
    }
    // A clean close is a `bye` at once, on every node.
    let pb = sim.peer(b);
    sim.close(b);
    sim.settle();
    assert_eq!(sim.fresh_of(a, "bye")[0]["peer"], pb);
    assert_eq!(sim.store.members("lobby").len(), 1);
    // Rooms never mix.
    sim.join(c, "other", 6);
    sim.send(
        c,
        json!({"type": "message", "room": "other", "data": 1, "id": 7}),
    );
    sim.settle();
    assert_eq!(sim.reply(c, 7)["delivered"], 0);
    assert!(sim.fresh_of(a, "message").is_empty());
}

#[test]
fn capacity_holds_under_concurrent_joins() {
    for seed in 0..20 {
        let config = Config {
            max_peers: 2,
            ..Config::default()
        };
        let mut sim = Sim::new(3, config, seed);
        let clients: Vec<usize> = (0..6)
            .map(|i| sim.connect(i % 3, Default::default()))
            .collect();
        for &c in &clients {
            sim.send(c, json!({"type": "join", "room": "r", "id": 1}));
        }
        sim.settle();
        let joined = clients
            .iter()
            .filter(|&&c| sim.reply(c, 1)["type"] == "joined")
            .count();
        let full = clients
            .iter()
            .filter(|&&c| sim.reply(c, 1)["type"] == "full")
            .count();
        assert_eq!((joined, full), (2, 4), "seed {seed}");
        assert_eq!(sim.store.members("r").len(), 2);
    }
}

#[test]
fn a_classic_peer_shares_a_room_across_nodes() {
    let mut sim = Sim::new(2, Config::default(), 3);
    let n = sim.connect(0, Default::default());
    let k = sim.classic(1);
    sim.join(n, "r", 1);
    sim.emit(k, "join", &[json!("r")], true);
    sim.settle();
    assert_eq!(sim.clients[k].replies, vec![json!({"ok": true})]);
    assert_eq!(sim.clients[k].events[0].event, "joined");
    assert_eq!(sim.fresh_of(n, "other_joined").len(), 1);
    sim.emit(k, "message", &[json!("r"), json!({"sdp": "x"})], true);
    sim.send(
        n,
        json!({"type": "message", "room": "r", "data": "hi", "id": 2}),
    );
    sim.settle();
    assert_eq!(sim.clients[k].replies[1], json!({"delivered": 1}));
    assert_eq!(sim.reply(n, 2)["delivered"], 1);
    assert_eq!(sim.fresh_of(n, "message")[0]["data"], json!({"sdp": "x"}));
    let got: Vec<_> = sim.clients[k].events.iter().map(|e| e.event).collect();
    assert_eq!(got, ["joined", "message"]);
    // A classic message to a room it is not in: refused, in order.
    sim.emit(k, "message", &[json!("nope"), json!(1)], true);
    sim.emit(k, "leave", &[json!("r")], true);
    sim.settle();
    assert_eq!(sim.clients[k].replies[2]["code"], "not_in_room");
    assert_eq!(sim.clients[k].replies[3], json!({"ok": true}));
    assert_eq!(sim.fresh_of(n, "bye").len(), 1);
}
