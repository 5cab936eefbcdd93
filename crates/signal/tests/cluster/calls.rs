//! Direct calls across nodes: every connection of the callee rings, one
//! accept wins.

use std::time::Duration;

use serde_json::json;
use switchboard_signal::Config;

use crate::sim::{NODE_TIMEOUT, Sim, user};

/// Alice on node 0; Bob on nodes 1 and 2 (and 0).
fn setup(seed: u64) -> (Sim, usize, Vec<usize>) {
    let mut sim = Sim::new(3, Config::default(), seed);
    let alice = sim.connect(0, user("alice"));
    let bobs = vec![
        sim.connect(1, user("bob")),
        sim.connect(2, user("bob")),
        sim.connect(0, user("bob")),
    ];
    // The store learns of them a bus delay later.
    sim.settle();
    (sim, alice, bobs)
}

fn ring(sim: &mut Sim, alice: usize, bobs: &[usize]) -> String {
    sim.send(
        alice,
        json!({"type": "call", "to": "bob", "meta": {"v": 1}, "id": 1}),
    );
    sim.settle();
    let ringing = sim.reply(alice, 1);
    assert_eq!(ringing["type"], "ringing", "{ringing}");
    let call = ringing["call"].as_str().expect("call").to_owned();
    for &b in bobs {
        let inc = sim.fresh_of(b, "incoming_call");
        assert_eq!(
            inc.len(),
            1,
            "bob {b}: {inc:?}; all: {:?}",
            sim.clients[b].frames
        );
        assert_eq!(inc[0]["call"], call.as_str());
        assert_eq!(inc[0]["from"], "alice");
    }
    call
}

#[test]
fn exactly_one_accept_wins() {
    for seed in 0..20 {
        let (mut sim, alice, bobs) = setup(seed);
        let call = ring(&mut sim, alice, &bobs);
        for &b in &bobs {
            sim.send(b, json!({"type": "accept", "call": call, "id": 9}));
        }
        sim.settle();
        let accepted = sim.fresh_of(alice, "accepted");
        assert_eq!(accepted.len(), 1, "seed {seed}");
        let room = accepted[0]["room"].as_str().expect("room").to_owned();
        let winners: Vec<usize> = bobs
            .iter()
            .copied()
            .filter(|&b| sim.reply(b, 9)["type"] == "joined")
            .collect();
        assert_eq!(winners.len(), 1, "seed {seed}");
        let w = winners[0];
        assert_eq!(sim.reply(w, 9)["room"], room.as_str());
        for &b in bobs.iter().filter(|&&b| b != w) {
            assert_eq!(sim.reply(b, 9)["code"], "no_such_call", "seed {seed}");
            let ended = sim.fresh_of(b, "call_ended");
            assert_eq!(ended.len(), 1, "seed {seed}");
            assert_eq!(ended[0]["reason"], "answered_elsewhere");
        }
        // The two talk in the call's room, whoever joined first.
        sim.send(
            alice,
            json!({"type": "message", "room": room, "data": "hi", "id": 2}),
        );
        sim.settle();
        assert_eq!(sim.reply(alice, 2)["delivered"], 1, "seed {seed}");
        assert_eq!(sim.fresh_of(w, "message").len(), 1);
        // Nobody else may sit in it.
        let other = bobs.iter().copied().find(|&b| b != w).expect("loser");
        let j = sim.join(other, &room, 3);
        assert_eq!(j["code"], "forbidden", "{j}");
    }
}

#[test]
fn decline_cancel_and_no_answer() {
    let (mut sim, alice, bobs) = setup(5);
    let call = ring(&mut sim, alice, &bobs);
    sim.send(bobs[0], json!({"type": "decline", "call": call, "id": 4}));
    sim.settle();
    assert_eq!(sim.fresh_of(alice, "declined").len(), 1);
    assert!(sim.fresh_of(bobs[0], "error").is_empty());
    for &b in &bobs[1..] {
        assert_eq!(sim.fresh_of(b, "call_ended")[0]["reason"], "declined");
    }
    sim.send(bobs[1], json!({"type": "accept", "call": call, "id": 5}));
    sim.settle();
    assert_eq!(sim.reply(bobs[1], 5)["code"], "no_such_call");

    sim.send(alice, json!({"type": "call", "to": "bob", "id": 6}));
    sim.settle();
    let call = sim.reply(alice, 6)["call"]
        .as_str()
        .expect("call")
        .to_owned();
    sim.send(alice, json!({"type": "cancel", "call": call, "id": 7}));
    sim.settle();
    for &b in &bobs {
        let ended = sim.fresh_of(b, "call_ended");
        assert_eq!(
            ended.last().map(|e| e["reason"].clone()),
            Some(json!("cancelled"))
        );
    }

    sim.send(alice, json!({"type": "call", "to": "bob", "id": 8}));
    sim.settle();
    sim.run(Config::default().ring_timeout + Duration::from_secs(1));
    assert_eq!(sim.fresh_of(alice, "call_ended")[0]["reason"], "no_answer");
    for &b in &bobs {
        let ended = sim.fresh_of(b, "call_ended");
        assert_eq!(
            ended.last().map(|e| e["reason"].clone()),
            Some(json!("no_answer"))
        );
    }

    sim.send(alice, json!({"type": "call", "to": "nobody", "id": 10}));
    sim.settle();
    assert_eq!(sim.reply(alice, 10)["code"], "no_such_user");
}

#[test]
fn a_dead_node_ends_its_side_of_a_call() {
    // The callee's only node dies: the caller hears `gone` once its
    // sessions there are seen dead and not resumed.
    let mut sim = Sim::new(3, Config::default(), 6);
    let alice = sim.connect(0, user("alice"));
    let bob = sim.connect(1, user("bob"));
    sim.send(alice, json!({"type": "call", "to": "bob", "id": 1}));
    sim.settle();
    assert_eq!(sim.reply(alice, 1)["type"], "ringing");
    sim.fresh(bob);
    sim.kill(1);
    sim.run(NODE_TIMEOUT + Duration::from_secs(1));
    assert_eq!(sim.fresh_of(alice, "call_ended")[0]["reason"], "gone");

    // The caller's node dies: the callee's ring ends with `gone`.
    let carol = sim.connect(2, user("carol"));
    let dave = sim.connect(0, user("dave"));
    sim.send(dave, json!({"type": "call", "to": "carol", "id": 2}));
    sim.settle();
    assert_eq!(sim.fresh_of(carol, "incoming_call").len(), 1);
    sim.kill(0);
    sim.run(NODE_TIMEOUT + Duration::from_secs(1));
    assert_eq!(sim.fresh_of(carol, "call_ended")[0]["reason"], "gone");
}
