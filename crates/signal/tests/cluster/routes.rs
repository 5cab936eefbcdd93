//! Messages nobody waits for a count of go past the store: a node asks a
//! room's route once (`Command::Route`), then forwards straight to the
//! members' nodes (`Command::Forward`) until the store says the route
//! changed. None may be lost or reach someone it should not.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_signal::Config;

use crate::sim::Sim;

fn say(sim: &mut Sim, c: usize, room: &str, data: Value) {
    sim.send(c, json!({"type": "message", "room": room, "data": data}));
}

/// The `data` of the messages `c` got since the test last looked.
fn heard(sim: &mut Sim, c: usize) -> Vec<Value> {
    sim.fresh_of(c, "message")
        .into_iter()
        .map(|m| m["data"].clone())
        .collect()
}

/// `a` on node 0 and `b` on node 1 in room `r`; `a`'s node holds the
/// room's route (its second message went past the store).
fn routed_pair(sim: &mut Sim) -> (usize, usize) {
    let a = sim.connect(0, Default::default());
    let b = sim.connect(1, Default::default());
    sim.join(a, "r", 1);
    sim.join(b, "r", 1);
    say(sim, a, "r", json!("warm"));
    sim.settle();
    say(sim, a, "r", json!("routed"));
    sim.settle();
    assert_eq!(heard(sim, b), [json!("warm"), json!("routed")]);
    assert!(sim.forwarded >= 1);
    (a, b)
}

#[test]
fn once_routed_messages_skip_the_store_and_arrive_in_order() {
    let mut sim = Sim::new(2, Config::default(), 21);
    let a = sim.connect(0, Default::default());
    let b = sim.connect(1, Default::default());
    sim.join(a, "r", 1);
    sim.join(b, "r", 1);
    // Back to back: the first ones go through the store while the route
    // is asked for, the rest past it; b gets all of them, in order.
    for i in 0..20 {
        say(&mut sim, a, "r", json!(i));
        sim.run(Duration::from_micros(700));
    }
    sim.settle();
    assert_eq!(
        heard(&mut sim, b),
        (0..20).map(|i| json!(i)).collect::<Vec<_>>()
    );
    assert!(sim.forwarded >= 10, "forwarded {}", sim.forwarded);
    // A message with an id still gets the store's count.
    sim.send(
        a,
        json!({"type": "message", "room": "r", "data": "counted", "id": 9}),
    );
    sim.settle();
    assert_eq!(sim.reply(a, 9)["delivered"], 1);
    assert_eq!(heard(&mut sim, b), [json!("counted")]);
}

#[test]
fn a_joiner_a_leaver_and_a_mover_change_the_route() {
    let mut sim = Sim::new(3, Config::default(), 22);
    let (a, b) = routed_pair(&mut sim);
    let before = sim.forwarded;

    // A joiner on a third node hears what a says after its `joined`.
    let c = sim.connect(2, Default::default());
    sim.join(c, "r", 1);
    sim.fresh(a);
    say(&mut sim, a, "r", json!("to both"));
    sim.settle();
    assert_eq!(heard(&mut sim, b), [json!("to both")]);
    assert_eq!(heard(&mut sim, c), [json!("to both")]);

    // A leaver hears nothing more.
    sim.send(c, json!({"type": "leave", "room": "r", "id": 2}));
    sim.settle();
    say(&mut sim, a, "r", json!("after c left"));
    sim.settle();
    assert_eq!(heard(&mut sim, b), [json!("after c left")]);
    assert!(heard(&mut sim, c).is_empty());

    // b's client resumes on node 2: what a says then reaches it there.
    sim.cut(b);
    sim.resume(b, 2);
    sim.settle();
    for i in 0..5 {
        say(&mut sim, a, "r", json!(i));
        sim.settle();
    }
    assert_eq!(
        heard(&mut sim, b),
        (0..5).map(|i| json!(i)).collect::<Vec<_>>()
    );
    assert!(sim.forwarded > before, "forwarded again after the move");
}

#[test]
fn a_dead_nodes_adopted_sessions_are_routed_to_their_new_node() {
    let mut sim = Sim::new(3, Config::default(), 23);
    let (a, b) = routed_pair(&mut sim);
    // Node 1 dies; its session is adopted, in grace. What a says meanwhile
    // is kept for it, and it gets all of it when it resumes.
    sim.kill(1);
    sim.run(Duration::from_secs(12));
    for i in 0..3 {
        say(&mut sim, a, "r", json!(i));
        sim.settle();
    }
    sim.resume(b, 2);
    sim.settle();
    assert_eq!(
        heard(&mut sim, b),
        (0..3).map(|i| json!(i)).collect::<Vec<_>>()
    );
}
