//! Sessions that move: resumes on another node, node deaths, partitions.

use std::time::Duration;

use serde_json::json;
use switchboard_signal::Config;

use crate::sim::{NODE_TIMEOUT, Sim};

fn grace() -> Duration {
    Config::default().resume_grace
}

#[test]
fn a_session_resumes_on_another_node_with_every_frame() {
    let mut sim = Sim::new(3, Config::default(), 7);
    let a = sim.connect(0, Default::default());
    let b = sim.connect(1, Default::default());
    sim.join(a, "r", 1);
    sim.join(b, "r", 1);
    sim.cut(b);
    sim.settle();
    for i in 0..5 {
        sim.send(
            a,
            json!({"type": "message", "room": "r", "data": i, "id": 10 + i}),
        );
    }
    sim.settle();
    for i in 0..5 {
        assert_eq!(
            sim.reply(a, 10 + i)["delivered"],
            1,
            "kept in grace, counted"
        );
    }
    // b comes back on node 2: the five, in order, with their seq.
    sim.resume(b, 2);
    sim.settle();
    assert_eq!(
        sim.clients[b].unsequenced.last().map(|v| v["type"].clone()),
        Some(json!("resumed"))
    );
    let got: Vec<_> = sim
        .fresh_of(b, "message")
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(got, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
    // It is node 2's now: messages both ways, nobody saw bye.
    sim.send(
        b,
        json!({"type": "message", "room": "r", "data": "back", "id": 20}),
    );
    sim.send(
        a,
        json!({"type": "message", "room": "r", "data": "hi", "id": 21}),
    );
    sim.settle();
    assert_eq!(sim.reply(b, 20)["delivered"], 1);
    assert_eq!(sim.reply(a, 21)["delivered"], 1);
    assert!(sim.fresh_of(a, "bye").is_empty());
    assert_eq!(sim.fresh_of(b, "message").len(), 1);
    // The old node forgot it: its grace timer does not end it later.
    sim.run(grace() + Duration::from_secs(5));
    assert!(sim.fresh_of(a, "bye").is_empty());
    assert_eq!(sim.store.members("r").len(), 2);
}

#[test]
fn a_live_session_is_taken_over_from_another_node() {
    let mut sim = Sim::new(2, Config::default(), 8);
    let a = sim.connect(0, Default::default());
    let b = sim.connect(1, Default::default());
    sim.join(a, "r", 1);
    sim.join(b, "r", 1);
    // b's client moves to node 0 while node 1 still holds its socket.
    let (node, conn) = sim.clients[b].conn.expect("conn");
    assert_eq!(node, 1);
    let _ = conn;
    sim.resume(b, 0);
    sim.settle();
    sim.send(
        a,
        json!({"type": "message", "room": "r", "data": 1, "id": 2}),
    );
    sim.settle();
    assert_eq!(sim.reply(a, 2)["delivered"], 1);
    assert_eq!(sim.fresh_of(b, "message").len(), 1);
    assert_eq!(
        sim.store
            .members("r")
            .iter()
            .filter(|(_, n)| n.0.as_ref() == "n0")
            .count(),
        2
    );
}

#[test]
fn a_dead_nodes_sessions_wait_then_say_bye() {
    let mut sim = Sim::new(3, Config::default(), 9);
    let a = sim.connect(0, Default::default());
    let b = sim.connect(1, Default::default());
    sim.join(a, "r", 1);
    sim.join(b, "r", 1);
    let pb = sim.peer(b);
    sim.fresh(a);
    sim.kill(1);
    // Nothing before the node is seen dead and the grace has run.
    sim.run(NODE_TIMEOUT + grace() - Duration::from_secs(1));
    assert!(sim.fresh_of(a, "bye").is_empty());
    sim.run(Duration::from_secs(6));
    let bye = sim.fresh_of(a, "bye");
    assert_eq!(bye.len(), 1, "{bye:?}");
    assert_eq!(bye[0]["peer"], pb);
    assert_eq!(sim.store.members("r").len(), 1, "no ghost");
    assert_eq!(sim.store.session_count(), 1);
    // A fresh join sees no ghost.
    let c = sim.connect(2, Default::default());
    let jc = sim.join(c, "r", 1);
    assert_eq!(jc["peers"].as_array().map(Vec::len), Some(1), "{jc}");
}

#[test]
fn a_dead_nodes_session_resumes_elsewhere_with_what_was_counted() {
    let mut sim = Sim::new(3, Config::default(), 10);
    let a = sim.connect(0, Default::default());
    let b = sim.connect(1, Default::default());
    sim.join(a, "r", 1);
    sim.join(b, "r", 1);
    for i in 0..3 {
        sim.send(
            a,
            json!({"type": "message", "room": "r", "data": i, "id": 10 + i}),
        );
    }
    sim.settle();
    // b's client read only the first of them before its node died.
    let seen = sim.clients[b]
        .frames
        .iter()
        .position(|f| f["data"] == 0)
        .expect("first");
    let last_seq = sim.clients[b].frames[seen]["seq"].as_u64().expect("seq");
    sim.clients[b].last_seq = last_seq;
    sim.clients[b].frames.truncate(seen + 1);
    sim.fresh(b);
    sim.kill(1);
    // While the death is not yet seen, counted messages wait in the store.
    sim.run(Duration::from_secs(2));
    // Within a second or two the client is back, on node 2.
    sim.resume(b, 2);
    sim.settle();
    let got: Vec<_> = sim
        .fresh_of(b, "message")
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(got, [json!(1), json!(2)]);
    sim.send(
        a,
        json!({"type": "message", "room": "r", "data": "x", "id": 20}),
    );
    sim.settle();
    assert_eq!(sim.reply(a, 20)["delivered"], 1);
    // Long after: nobody saw bye, the call went on.
    sim.run(NODE_TIMEOUT + grace() + Duration::from_secs(10));
    assert!(sim.fresh_of(a, "bye").is_empty());
    sim.send(
        b,
        json!({"type": "message", "room": "r", "data": "y", "id": 21}),
    );
    sim.settle();
    assert_eq!(sim.reply(b, 21)["delivered"], 1);
}

#[test]
fn an_adopted_session_resumes_on_its_adopter_or_another_node() {
    for target in [0, 2] {
        let mut sim = Sim::new(3, Config::default(), 11);
        let a = sim.connect(0, Default::default());
        let b = sim.connect(1, Default::default());
        sim.join(a, "r", 1);
        sim.join(b, "r", 1);
        sim.kill(1);
        // Seen dead and adopted; then the client returns.
        sim.run(NODE_TIMEOUT + Duration::from_secs(2));
        sim.send(
            a,
            json!({"type": "message", "room": "r", "data": "late", "id": 5}),
        );
        sim.settle();
        assert_eq!(sim.reply(a, 5)["delivered"], 1, "kept by the adopter");
        sim.resume(b, target);
        sim.settle();
        let got = sim.fresh_of(b, "message");
        assert_eq!(got.len(), 1, "target {target}: {got:?}");
        sim.run(grace() + Duration::from_secs(5));
        assert!(sim.fresh_of(a, "bye").is_empty(), "target {target}");
    }
}

#[test]
fn a_partitioned_node_serves_its_own_and_refuses_the_rest() {
    let mut sim = Sim::new(2, Config::default(), 12);
    let a = sim.connect(0, Default::default());
    let a2 = sim.connect(0, Default::default());
    let b = sim.connect(1, Default::default());
    sim.join(a, "r", 1);
    sim.join(a2, "r", 1);
    sim.join(b, "r", 1);
    sim.partition(0);
    sim.send(
        a,
        json!({"type": "message", "room": "r", "data": 1, "id": 2}),
    );
    sim.send(a, json!({"type": "join", "room": "s", "id": 3}));
    let pb = sim.peer(b);
    sim.send(
        a,
        json!({"type": "message", "room": "r", "to": pb, "data": 1, "id": 4}),
    );
    sim.settle();
    assert_eq!(sim.reply(a, 2)["delivered"], 1, "the peer on the same node");
    assert_eq!(sim.reply(a, 3)["code"], "unavailable");
    assert_eq!(sim.reply(a, 4)["code"], "unavailable");
    // Back within the node timeout: all as before.
    sim.run(Duration::from_secs(3));
    sim.heal(0);
    sim.settle();
    sim.send(
        a,
        json!({"type": "message", "room": "r", "data": 2, "id": 5}),
    );
    sim.settle();
    assert_eq!(sim.reply(a, 5)["delivered"], 2);
    assert!(sim.fresh_of(b, "bye").is_empty());
}

#[test]
fn a_long_partition_moves_the_nodes_sessions_and_they_resume() {
    let mut sim = Sim::new(2, Config::default(), 13);
    let a = sim.connect(0, Default::default());
    let b = sim.connect(1, Default::default());
    sim.join(a, "r", 1);
    sim.join(b, "r", 1);
    sim.partition(0);
    // The store sees node 0 dead; node 1 adopts a's session (in grace).
    sim.run(NODE_TIMEOUT + Duration::from_secs(2));
    sim.send(
        b,
        json!({"type": "message", "room": "r", "data": 1, "id": 2}),
    );
    sim.settle();
    assert_eq!(sim.reply(b, 2)["delivered"], 1);
    // The partition heals: node 0 learns a's session is elsewhere and
    // closes it with 1012; the client resumes (say, on node 1).
    sim.heal(0);
    sim.settle();
    assert_eq!(sim.clients[a].closes, [1012]);
    sim.resume(a, 1);
    sim.settle();
    let got = sim.fresh_of(a, "message");
    assert_eq!(got.len(), 1, "{got:?}");
    sim.run(Config::default().resume_grace + Duration::from_secs(5));
    assert!(sim.fresh_of(b, "bye").is_empty());
}

#[test]
fn a_store_restarted_empty_gets_everything_back() {
    let mut sim = Sim::new(3, Config::default(), 14);
    let a = sim.connect(0, Default::default());
    let b = sim.connect(1, Default::default());
    let c = sim.connect(2, Default::default());
    for x in [a, b, c] {
        sim.join(x, "r", 1);
    }
    sim.cut(c);
    sim.settle();
    sim.restart_store(2);
    sim.settle();
    assert_eq!(sim.store.members("r").len(), 3, "seats restored");
    sim.send(
        a,
        json!({"type": "message", "room": "r", "data": 1, "id": 2}),
    );
    sim.settle();
    assert_eq!(
        sim.reply(a, 2)["delivered"],
        2,
        "b, and c in its grace period"
    );
    assert_eq!(sim.fresh_of(b, "message").len(), 1);
    // c resumes on another node than its own, with what it missed.
    sim.resume(c, 0);
    sim.settle();
    assert_eq!(sim.fresh_of(c, "message").len(), 1);
    assert!(sim.fresh_of(a, "bye").is_empty() && sim.fresh_of(b, "bye").is_empty());
    // Capacity and a fresh join still work against the new store.
    let d = sim.connect(1, Default::default());
    let jd = sim.join(d, "r", 3);
    assert_eq!(jd["peers"].as_array().map(Vec::len), Some(3), "{jd}");
}
