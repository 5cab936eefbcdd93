//! Random commands of 3 nodes over a few sessions, rooms and users, with
//! their odd cases (not owned, unknown, wrong token, another move's copy,
//! a skipped `seq`, duplicates, another generation); every push and every
//! answer must match the reference's.

mod support;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchboard_backplane::StoreConfig;
use switchboard_signal::cluster::store::Store;
use switchboard_signal::cluster::{Command, NodeId, Push, SeatOutcome, TakeOutcome, Text};
use switchboard_signal::{Face, MediaKind};

use support::cluster::{Cluster, cap, msg, rec};

const NODES: [&str; 3] = ["a", "b", "c"];
const SESSIONS: usize = 8;

fn pick(rng: &mut ChaCha8Rng, n: usize) -> usize {
    rng.random_range(0..n)
}

fn peer(i: usize) -> String {
    format!("p{i}")
}

/// What the walk believes of each session (its epoch and `seq`), learnt
/// from the reference's answers and pushes: so that most persists are the
/// next frame of the current move, and most copies are current.
#[derive(Default)]
struct Beliefs(HashMap<String, (u32, u64)>);

impl Beliefs {
    fn get(&self, s: &str) -> (u32, u64) {
        self.0.get(s).copied().unwrap_or((0, 0))
    }

    fn epoch(&self, rng: &mut ChaCha8Rng, s: &str) -> u32 {
        if pick(rng, 5) == 0 {
            rng.random_range(0..4)
        } else {
            self.get(s).0
        }
    }

    /// `home` is the node each session most likely lives on, after `cmd`
    /// of `node`.
    fn learn(
        &mut self,
        node: usize,
        home: &[usize],
        cmd: &Command,
        ok: bool,
        pushes: &[(NodeId, Push)],
    ) {
        match cmd {
            Command::End { session } => {
                self.0.remove(&**session);
            }
            Command::Register(r) => {
                self.0
                    .entry(r.session.to_string())
                    .or_insert((r.epoch, r.seq));
            }
            Command::Persist { session, seq, .. } if ok => {
                self.0.entry(session.to_string()).or_default().1 = *seq;
            }
            Command::Append { session, seq, .. } => {
                let e = self.0.entry(session.to_string()).or_default();
                e.1 = e.1.max(*seq);
            }
            Command::Resumed {
                session,
                seq,
                last_seq,
                ..
            } if ok => {
                let e = self.0.entry(session.to_string()).or_default();
                e.1 = e.1.max(*seq).max(*last_seq);
            }
            Command::Resync { sessions, .. } => {
                // What the node did not name is ended (if it was its).
                for (i, h) in home.iter().enumerate() {
                    let s = format!("s{i}");
                    if *h == node && !sessions.iter().any(|r| *r.session == *s) {
                        self.0.remove(&s);
                    }
                }
                for r in sessions {
                    self.0
                        .entry(r.session.to_string())
                        .or_insert((r.epoch, r.seq));
                }
            }
            _ => {}
        }
        for (_, p) in pushes {
            match p {
                Push::Took {
                    outcome: TakeOutcome::Taken(r) | TakeOutcome::Gap(r),
                    ..
                } => {
                    self.0.insert(r.session.to_string(), (r.epoch, r.seq));
                }
                Push::Adopted { sessions, .. } => {
                    for r in sessions {
                        self.0.insert(r.session.to_string(), (r.epoch, r.seq));
                    }
                }
                _ => {}
            }
        }
    }
}

fn command(
    rng: &mut ChaCha8Rng,
    step: u64,
    node: &str,
    i: usize,
    home: &mut [usize],
    known: &Beliefs,
    store: &Store,
) -> Command {
    let s = format!("s{i}");
    let room = format!("r{}", pick(rng, 3));
    let (epoch, seq) = (known.epoch(rng, &s), known.get(&s).1);
    // Sessions end often (ends, resyncs): most commands should find one.
    let fresh = !known.0.contains_key(&s) && pick(rng, 2) == 0;
    match if fresh { 0 } else { pick(rng, 30) } {
        0..=3 => {
            let mut r = rec(&s, &peer(i), Some(["u", "v"][i % 2]));
            if i == 7 {
                r.face = Face::Classic;
            }
            r.epoch = rng.random_range(0..2);
            r.seq = rng.random_range(0..4);
            r.frames = (1..=r.seq)
                .map(|q| (q, Bytes::from(vec![b'f'; 20])))
                .collect();
            Command::Register(r)
        }
        4..=7 => {
            let private =
                (pick(rng, 4) == 0).then(|| [peer(pick(rng, 8)).into(), peer(pick(rng, 8)).into()]);
            Command::Join {
                req: step,
                session: s.into(),
                room: room.into(),
                meta: (pick(rng, 2) == 0).then(|| "{\"m\":1}".into()),
                limits: cap(pick(rng, 4), [0, 80, 120][pick(rng, 3)]),
                private,
                // Half the joins would make SFU rooms, from a node with a
                // media socket or without (by the step: the walk's random
                // draws stay those it had before rooms had kinds).
                media: [MediaKind::Mesh, MediaKind::Sfu][(step % 2) as usize],
                relay: !step.is_multiple_of(3),
            }
        }
        8 => Command::Leave {
            session: s.into(),
            room: room.into(),
        },
        9..=11 => Command::Publish {
            req: (pick(rng, 3) != 0).then_some(step),
            room: room.into(),
            to: (pick(rng, 3) == 0).then(|| peer(pick(rng, 8)).into()),
            // Sometimes about one of the members, sometimes nobody's.
            event: msg(&peer(pick(rng, 10)), "\"d\""),
            local: (0..pick(rng, 3))
                .map(|_| {
                    let l = format!("s{}", pick(rng, SESSIONS));
                    let e = known.epoch(rng, &l);
                    (Text::from(l), e)
                })
                .collect(),
            classic: rng.random_range(0..3),
        },
        12..=14 => Command::Persist {
            session: s.into(),
            epoch,
            seq: if pick(rng, 4) == 0 {
                rng.random_range(0..12)
            } else {
                seq + 1
            },
            body: Bytes::from(vec![b'b'; pick(rng, 40)]),
            sent: pick(rng, 3) != 0,
        },
        15 => Command::Trim {
            session: s.into(),
            last_seq: rng.random_range(0..12),
        },
        16 => Command::Report {
            to: NodeId::new(NODES[pick(rng, 3)]),
            req: step,
            sessions: vec![(s.into(), epoch)],
            classic: 1,
        },
        17 => Command::End { session: s.into() },
        18 => Command::Take {
            req: step,
            token: if pick(rng, 5) == 0 {
                "bad".into()
            } else {
                if let Some(n) = NODES.iter().position(|n| *n == node) {
                    home[i] = n;
                }
                format!("tok-{s}").into()
            },
            session: s.into(),
            last_seq: seq.saturating_sub(4) + rng.random_range(0..6),
        },
        19 => Command::Resumed {
            session: s.into(),
            epoch,
            last_seq: seq.saturating_sub(1) + rng.random_range(0..4),
            seq: seq + rng.random_range(0..3),
        },
        20 => Command::Ring {
            req: step,
            call: format!("k{step}").into(),
            user: ["u", "v", "w"][pick(rng, 3)].into(),
            except: s.into(),
            body: Bytes::from_static(b"{}"),
        },
        21 => Command::Adopt {
            req: step,
            dead: NodeId::new(NODES[pick(rng, 3)]),
        },
        // The hot path of a frame: a node appends only beyond the seq of
        // its copy (the store's, when the copy is current), so the walk
        // asks the reference; sometimes from another copy or another node.
        22..=24 => {
            let (owner, current, at) =
                store
                    .session_of(&s)
                    .unwrap_or((NodeId::new(node), epoch, seq));
            let own = *owner.0 == *node && pick(rng, 5) != 0;
            Command::Append {
                session: s.into(),
                epoch: if own { current } else { epoch },
                seq: at + 1 + rng.random_range(0..2),
                body: Bytes::from(vec![b'a'; pick(rng, 40)]),
                keep: (pick(rng, 3) == 0).then(|| rng.random_range(1..4)),
            }
        }
        25 => Command::Drop {
            session: s.into(),
            epoch: rng.random_range(0..4),
        },
        26 => Command::Route { room: room.into() },
        27 => Command::Forward {
            to: NodeId::new(NODES[pick(rng, 3)]),
            room: room.into(),
            event: msg(&peer(pick(rng, 10)), "\"f\""),
            sessions: vec![s.into()],
        },
        _ if pick(rng, 2) != 0 => Command::Heartbeat,
        _ => {
            let mut mine = Vec::new();
            for j in 0..SESSIONS {
                if pick(rng, 3) != 0 {
                    continue;
                }
                let sj = format!("s{j}");
                let mut r = rec(&sj, &peer(j), None);
                r.epoch = known.epoch(rng, &sj);
                let bits = pick(rng, 8);
                r.rooms = (0..3)
                    .filter(|b| bits & (1 << b) != 0)
                    .map(|b| format!("r{b}").into())
                    .collect();
                r.seq = known.get(&sj).1 + rng.random_range(0..2);
                r.frames = vec![(r.seq.max(1), Bytes::from_static(b"x"))];
                r.base = (pick(rng, 3) == 0).then(|| r.seq.saturating_sub(1));
                mine.push(r);
            }
            // Mostly the store's own generation; sometimes none (a node
            // that never saw one); sometimes an older one: a restore.
            let generation = match pick(rng, 8) {
                0 => None,
                1 => Some(2),
                _ => Some(1),
            };
            Command::Resync {
                sessions: mine,
                generation,
            }
        }
    }
}

/// An admin request (views, kicks), from a generator of its own so that
/// the walk's other commands stay as they were. None changes the store
/// while no node is dead: a kick only tells the members' nodes.
fn admin(rng: &mut ChaCha8Rng, step: u64) -> (&'static str, Command) {
    let node = NODES[pick(rng, 3)];
    let room: Text = format!("r{}", pick(rng, 3)).into();
    let cmd = match pick(rng, 3) {
        0 => Command::Rooms { req: step },
        1 => Command::Room { req: step, room },
        _ => Command::Kick {
            req: step,
            room,
            peer: (pick(rng, 3) != 0).then(|| peer(pick(rng, 10)).into()),
        },
    };
    (node, cmd)
}

fn kind(p: &Push) -> &'static str {
    match p {
        Push::JoinAnswer { outcome, .. } => match outcome {
            SeatOutcome::Seated { .. } => "seated",
            SeatOutcome::Full => "full",
            SeatOutcome::Forbidden => "forbidden",
            SeatOutcome::NoRelay => "no-relay",
        },
        Push::Took { outcome, .. } => match outcome {
            TakeOutcome::Taken(_) => "taken",
            TakeOutcome::Gap(_) => "gap",
            TakeOutcome::Unknown => "unknown",
        },
        Push::Deliver { .. } => "deliver",
        Push::Taken { .. } => "taken-away",
        Push::Ring { .. } => "ring",
        Push::Counted { count, .. } if *count > 1 => "counted",
        Push::Resynced { lost, .. } if !lost.is_empty() => "resync-lost",
        Push::Resynced { .. } => "resynced",
        Push::Published { .. } => "published",
        Push::Kick { .. } => "kick",
        Push::Route { nodes, .. } if !nodes.is_empty() => "route",
        Push::Rerouted { .. } => "rerouted",
        Push::Room { room: Some(_), .. } => "room",
        Push::Rooms { rooms, .. } if !rooms.is_empty() => "rooms",
        _ => "other",
    }
}

#[tokio::test]
async fn random_interleavings_match_the_reference() {
    let cfg = StoreConfig {
        replay_frames: 4,
        replay_bytes: 64,
        ..StoreConfig::default()
    };
    for seed in 0..4u64 {
        let mut c = Cluster::new(cfg, &NODES).await;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut admin_rng = ChaCha8Rng::seed_from_u64(seed + 100);
        // Whether a node's commands go to Redis one by one or several in a
        // round (appends hoisted and merged, forwards batched), from a
        // generator of its own. Only one node's are ever in flight: the
        // reference applies them in the walk's order.
        let mut round_rng = ChaCha8Rng::seed_from_u64(seed + 200);
        let mut queued: Option<&str> = None;
        // Where each session most likely lives, so that most commands come
        // from its owner (a take moves it).
        let mut home: Vec<usize> = (0..SESSIONS).map(|i| i % 3).collect();
        let mut known = Beliefs::default();
        let mut kinds = BTreeMap::new();
        for step in 0..1500u64 {
            let i = pick(&mut rng, SESSIONS);
            let node = if pick(&mut rng, 5) == 0 {
                NODES[pick(&mut rng, 3)]
            } else {
                NODES[home[i]]
            };
            let cmd = command(&mut rng, step, node, i, &mut home, &known, &c.store);
            if let Some(q) = queued
                && (q != node || step % 7 == 0)
            {
                c.flush(q).await;
                queued = None;
            }
            if step % 7 == 0 {
                let (by, view) = admin(&mut admin_rng, step);
                c.cmd(by, view).await;
            }
            let (ok, pushes) = c.queue(node, cmd.clone());
            if pick(&mut round_rng, 3) == 0 {
                queued = Some(node);
            } else {
                c.flush(node).await;
            }
            let n = NODES.iter().position(|n| *n == node).unwrap_or(0);
            known.learn(n, &home, &cmd, ok, &pushes);
            match &cmd {
                Command::Persist { .. } if ok => *kinds.entry("persisted").or_insert(0) += 1,
                Command::Persist { .. } => *kinds.entry("refused").or_insert(0) += 1,
                Command::Resumed { .. } if ok => *kinds.entry("resumed").or_insert(0) += 1,
                Command::Append { .. } => *kinds.entry("appended").or_insert(0) += 1,
                Command::Resync {
                    generation: Some(2),
                    ..
                } => *kinds.entry("restore").or_insert(0) += 1,
                _ => {}
            }
        }
        if let Some(q) = queued {
            c.flush(q).await;
        }
        let got = c.check().await;
        // The walk must reach the interesting cases, not only refusals.
        for p in got.values().flatten() {
            *kinds.entry(kind(p)).or_insert(0) += 1;
        }
        eprintln!("seed {seed}: {kinds:?}");
        for k in [
            "seated",
            "full",
            "forbidden",
            "no-relay",
            "taken",
            "gap",
            "unknown",
            "deliver",
            "ring",
            "counted",
            "persisted",
            "appended",
            "route",
            "rerouted",
            "refused",
            "resumed",
            "restore",
            "resync-lost",
            "kick",
            "room",
            "rooms",
        ] {
            assert!(
                kinds.contains_key(k),
                "seed {seed} never got {k}: {kinds:?}"
            );
        }
    }
}
