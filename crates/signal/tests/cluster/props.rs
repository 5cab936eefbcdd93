//! Random interleavings of messages, cuts, resumes on any node and a node's
//! death, over three nodes: no frame counted in an ack is ever lost, none
//! reaches a session twice, and every session's `seq` stays contiguous
//! (the harness checks that on every frame).

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use switchboard_signal::Config;

use crate::sim::{NODE_TIMEOUT, Sim};

const CLIENTS: usize = 6;
const NODES: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Message { from: usize, to: Option<usize> },
    Cut(usize),
    Resume { client: usize, node: usize },
    Kill(usize),
    Partition(usize),
    Heal(usize),
    Run(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..CLIENTS, proptest::option::weighted(0.3, 0..CLIENTS))
            .prop_map(|(from, to)| Op::Message { from, to }),
        2 => (0..CLIENTS).prop_map(Op::Cut),
        2 => (0..CLIENTS, 0..NODES).prop_map(|(client, node)| Op::Resume { client, node }),
        1 => (0..NODES).prop_map(Op::Kill),
        1 => (0..NODES).prop_map(Op::Partition),
        1 => (0..NODES).prop_map(Op::Heal),
        3 => (0u64..3000).prop_map(Op::Run),
    ]
}

fn check(seed: u64, ops: &[Op]) {
    let config = Config {
        // Nobody's grace runs out within a case: every counted frame must
        // then reach its session.
        resume_grace: Duration::from_secs(3600),
        rate_per_sec: 0,
        ..Config::default()
    };
    let mut sim = Sim::new(NODES, config, seed);
    let clients: Vec<usize> = (0..CLIENTS)
        .map(|i| sim.connect(i % NODES, Default::default()))
        .collect();
    for &c in &clients {
        sim.send(c, json!({"type": "join", "room": "r", "id": 0}));
    }
    sim.settle();
    let mut dead = [false; NODES];
    let mut cut = [false; NODES];
    let mut next_id = 1u64;
    // request id → (sender, message id)
    let mut sent: HashMap<u64, usize> = HashMap::new();
    for op in ops {
        match *op {
            Op::Message { from, to } => {
                if sim.clients[from].conn.is_none() {
                    continue;
                }
                let id = next_id;
                next_id += 1;
                let mut m = json!({"type": "message", "room": "r", "data": {"m": id}, "id": id});
                if let Some(to) = to.filter(|&t| t != from) {
                    m["to"] = json!(sim.peer(to));
                }
                sim.send(from, m);
                sent.insert(id, from);
            }
            Op::Cut(c) => sim.cut(c),
            Op::Resume { client, node } => {
                if !dead[node] && !cut[node] {
                    sim.resume(client, node);
                }
            }
            Op::Kill(n) => {
                // One death per case, and never the last node standing.
                if !dead.iter().any(|&d| d) && !cut[n] {
                    dead[n] = true;
                    sim.kill(n);
                }
            }
            Op::Partition(n) => {
                if !dead[n] && !cut[n] && dead.iter().chain(&cut).filter(|&&x| x).count() == 0 {
                    cut[n] = true;
                    sim.partition(n);
                }
            }
            Op::Heal(n) => {
                if cut[n] {
                    cut[n] = false;
                    sim.heal(n);
                }
            }
            Op::Run(ms) => sim.run(Duration::from_millis(ms)),
        }
    }
    // Everything heals; every client comes back on a live node.
    for (n, cut) in cut.iter().enumerate() {
        if *cut {
            sim.heal(n);
        }
    }
    sim.run(NODE_TIMEOUT + Duration::from_secs(2));
    let live: Vec<usize> = (0..NODES).filter(|&n| !dead[n]).collect();
    for (i, &c) in clients.iter().enumerate() {
        if sim.clients[c].conn.is_none() {
            sim.resume(c, live[i % live.len()]);
        }
    }
    sim.run(Duration::from_secs(5));

    for &c in &clients {
        let failed: Vec<&Value> = sim.clients[c]
            .unsequenced
            .iter()
            .filter(|v| v["code"] == "resume_failed")
            .collect();
        assert!(failed.is_empty(), "client {c}: {failed:?}");
    }
    // Who got each message, and how often.
    let mut got: HashMap<u64, Vec<usize>> = HashMap::new();
    for &c in &clients {
        for f in &sim.clients[c].frames {
            if f["type"] == "message"
                && let Some(m) = f["data"]["m"].as_u64()
            {
                got.entry(m).or_default().push(c);
            }
        }
    }
    for (m, who) in &got {
        let mut dedup = who.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), who.len(), "message {m} twice: {who:?}");
    }
    for (&id, &from) in &sent {
        let acks: Vec<&Value> = sim.clients[from]
            .frames
            .iter()
            .filter(|f| f["reply_to"] == id && f["type"] == "ack")
            .collect();
        let Some(ack) = acks.first() else {
            continue;
        };
        let counted = ack["delivered"].as_u64().expect("delivered");
        let reached = got.get(&id).map_or(0, Vec::len) as u64;
        assert!(
            reached >= counted,
            "message {id} from {from}: counted {counted}, reached {reached}: {:?}",
            got.get(&id)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn no_counted_frame_is_lost_or_doubled(seed in 0u64..1_000_000, ops in proptest::collection::vec(op(), 10..60)) {
        check(seed, &ops);
    }
}
