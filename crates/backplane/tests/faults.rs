//! Bad payloads, a Redis that dies and comes back, a full queue, answers
//! that never cross a down, passwords, and the client's own heartbeats
//! and sweeps.

mod support;

use std::time::Duration;

use bytes::Bytes;
use switchboard_backplane::codec::encode_push;
use switchboard_backplane::{Error, Event, Events, RedisBackplane, Settings, StoreConfig};
use switchboard_signal::cluster::{Command, NodeId, Push, SeatLimits, SeatOutcome, SessionRecord};
use switchboard_signal::{Face, MediaKind};

use support::RedisServer;

fn rec(session: &str) -> SessionRecord {
    SessionRecord {
        session: session.into(),
        token: "t".into(),
        peer: format!("peer-{session}").into(),
        user: None,
        face: Face::Native,
        seq: 0,
        frames: Vec::new(),
        rooms: Vec::new(),
        epoch: 0,
        base: None,
    }
}

fn persist(session: &str, seq: u64) -> Command {
    Command::Persist {
        session: session.into(),
        epoch: 0,
        seq,
        body: Bytes::from_static(b"{}"),
        sent: true,
    }
}

fn join(req: u64, session: &str) -> Command {
    Command::Join {
        req,
        session: session.into(),
        room: "r".into(),
        meta: None,
        limits: SeatLimits::default(),
        private: None,
        media: MediaKind::Mesh,
        relay: false,
    }
}

fn quiet(cfg: StoreConfig) -> Settings {
    let mut s = Settings::new(cfg);
    s.heartbeat = false;
    s.sweep = false;
    s
}

async fn next(rx: &mut Events, within: Duration) -> Event {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("an event in time")
        .expect("events open")
}

/// The next push, skipping link events.
async fn next_push(rx: &mut Events) -> Push {
    for _ in 0..16 {
        match next(rx, Duration::from_secs(10)).await {
            Event::Push(p) => return p,
            Event::Applied(ok) => panic!("an answer: {ok}"),
            _ => {}
        }
    }
    panic!("no push");
}

/// The next `pushes` pushes and `answers` answers: the two come off two
/// connections, in either order.
async fn collect(rx: &mut Events, pushes: usize, answers: usize) -> (Vec<Push>, Vec<bool>) {
    let (mut p, mut a) = (Vec::new(), Vec::new());
    for _ in 0..(pushes + answers) {
        match next(rx, Duration::from_secs(10)).await {
            Event::Push(x) => p.push(x),
            Event::Applied(ok) => a.push(ok),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((p.len(), a.len()), (pushes, answers), "{p:?} {a:?}");
    (p, a)
}

/// The next event that is not a push.
async fn next_other(rx: &mut Events) -> Event {
    for _ in 0..16 {
        match next(rx, Duration::from_secs(15)).await {
            Event::Push(p) => eprintln!("push: {p:?}"),
            other => return other,
        }
    }
    panic!("nothing but pushes");
}

/// Connects and reads the first event, `Up`: only then does `send` work.
async fn connect(url: &str, node: &str, settings: Settings) -> (RedisBackplane, Events) {
    let (bp, mut rx) = RedisBackplane::connect(url, NodeId::new(node), settings)
        .await
        .expect("connect");
    assert!(matches!(
        next(&mut rx, Duration::from_secs(10)).await,
        Event::Up
    ));
    (bp, rx)
}

#[tokio::test]
async fn garbage_on_the_node_channel_is_dropped_and_the_stream_goes_on() {
    let redis = RedisServer::start();
    let (bp, mut rx) = connect(&redis.url(), "a", quiet(StoreConfig::default())).await;
    let mut admin = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin");
    let valid = encode_push(&Push::Taken {
        session: "s0".into(),
    })
    .expect("encodable");
    let mut truncated = valid.clone();
    truncated.pop();
    let junk: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        b"".to_vec(),
        b"1:Z".to_vec(),
        b"1:T2:\xff\xfe".to_vec(),
        b"1:Y99999999999:".to_vec(),
        truncated,
        [valid.clone(), b"1:X".to_vec()].concat(),
    ];
    for j in junk.iter().chain(std::iter::once(&valid)) {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("sb:node:a")
            .arg(j)
            .query_async(&mut admin)
            .await
            .expect("publish");
    }
    assert_eq!(
        next_push(&mut rx).await,
        Push::Taken {
            session: "s0".into()
        }
    );
    // And the node's own pushes still come.
    bp.send(&Command::Register(rec("s1"))).expect("send");
    bp.send(&join(1, "s1")).expect("send");
    assert_eq!(
        next_push(&mut rx).await,
        Push::JoinAnswer {
            req: 1,
            outcome: SeatOutcome::Seated {
                peers: vec![],
                media: MediaKind::Mesh,
                media_node: None
            }
        }
    );
}

#[tokio::test]
async fn a_killed_redis_is_reported_and_a_resync_restores_what_it_lost() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let cfg = StoreConfig {
        node_timeout: Duration::from_millis(600),
        ..StoreConfig::default()
    };
    let mut settings = Settings::new(cfg);
    settings.response_timeout = Duration::from_secs(2);
    let (a, mut rx) = connect(&redis.url(), "a", settings.clone()).await;
    // At start the node resyncs with no generation: it learns the store's.
    a.send(&Command::Resync {
        sessions: Vec::new(),
        generation: None,
    })
    .expect("send");
    let Push::Resynced {
        lost,
        generation: first,
    } = next_push(&mut rx).await
    else {
        panic!("expected Resynced");
    };
    assert!(lost.is_empty());
    a.send(&Command::Register(rec("s1"))).expect("send");
    a.send(&join(1, "s1")).expect("send");
    a.send(&persist("s1", 1)).expect("send");
    a.flush().await.expect("flush");
    let (pushes, answers) = collect(&mut rx, 1, 1).await;
    assert!(matches!(pushes[0], Push::JoinAnswer { req: 1, .. }));
    assert_eq!(answers, [true]);

    redis.kill();
    match next(&mut rx, Duration::from_secs(10)).await {
        Event::Down(e) => eprintln!("down: {e}"),
        other => panic!("expected Down, got {other:?}"),
    }
    // Commands while down are refused, never a panic.
    for i in 0..10 {
        assert!(matches!(a.send(&join(i, "s1")), Err(Error::Down)));
    }

    let redis = RedisServer::start_on(port, None);
    let mut up = false;
    for _ in 0..16 {
        match next(&mut rx, Duration::from_secs(15)).await {
            Event::Up => {
                up = true;
                break;
            }
            Event::Down(e) => eprintln!("still down: {e}"),
            other => panic!("something from before the restart: {other:?}"),
        }
    }
    assert!(up, "never came back up");
    // The core resyncs, naming the generation it knew: Redis, restarted
    // empty, has another, and takes the session back, seat included.
    let mut s1 = rec("s1");
    s1.rooms = vec!["r".into()];
    s1.seq = 1;
    a.send(&Command::Resync {
        sessions: vec![s1],
        generation: Some(first),
    })
    .expect("send");
    a.send(&persist("s1", 2)).expect("send");
    a.flush().await.expect("flush after up");
    let (pushes, answers) = collect(&mut rx, 1, 1).await;
    let Push::Resynced { lost, generation } = pushes[0].clone() else {
        panic!("expected Resynced: {pushes:?}");
    };
    assert!(lost.is_empty(), "lost {lost:?}");
    assert_ne!(generation, first, "a restarted Redis is a new generation");
    // The restored session goes on where it was.
    assert_eq!(answers, [true]);
    // Another node finds the seat where it was.
    let (b, mut b_rx) = connect(&redis.url(), "b", settings).await;
    b.send(&Command::Register(rec("s2"))).expect("send");
    b.send(&join(42, "s2")).expect("send");
    assert_eq!(
        next_push(&mut b_rx).await,
        Push::JoinAnswer {
            req: 42,
            outcome: SeatOutcome::Seated {
                peers: vec![("peer-s1".into(), None)],
                media: MediaKind::Mesh,
                media_node: None,
            }
        }
    );
    // A resync naming the new generation is an ordinary one.
    b.send(&Command::Resync {
        sessions: vec![rec("s2")],
        generation: Some(generation),
    })
    .expect("send");
    assert_eq!(
        next_push(&mut b_rx).await,
        Push::Resynced {
            lost: Vec::new(),
            generation,
        }
    );
    drop(redis);
}

#[tokio::test]
async fn a_full_queue_drops_and_goes_down_then_up() {
    let redis = RedisServer::start();
    let mut settings = quiet(StoreConfig::default());
    settings.queue = 2;
    let (bp, mut rx) = connect(&redis.url(), "a", settings).await;
    // The test runtime runs one task at a time: nothing drains the queue
    // while this loop runs.
    let results: Vec<_> = (0..4).map(|_| bp.send(&Command::Heartbeat)).collect();
    assert!(results[..2].iter().all(Result::is_ok));
    assert!(matches!(results[2], Err(Error::QueueFull)));
    assert!(matches!(
        next_other(&mut rx).await,
        Event::Down(Error::QueueFull)
    ));
    // The caller knows the link is down: nothing is queued.
    assert!(matches!(bp.send(&Command::Heartbeat), Err(Error::Down)));
    assert!(matches!(next_other(&mut rx).await, Event::Up));
    // (The queue holds 2.)
    bp.send(&Command::Register(rec("s1"))).expect("send");
    bp.send(&persist("s1", 1)).expect("send");
    assert!(matches!(next_other(&mut rx).await, Event::Applied(true)));
    bp.send(&join(7, "s1")).expect("send");
    assert!(matches!(
        next_push(&mut rx).await,
        Push::JoinAnswer { req: 7, .. }
    ));
}

/// A command sent before the caller read of a down and up is dropped, and
/// no answer of it is ever taken for one of a later command.
#[tokio::test]
async fn answers_never_cross_a_down() {
    let redis = RedisServer::start();
    let mut settings = quiet(StoreConfig::default());
    settings.queue = 2;
    let (bp, mut rx) = connect(&redis.url(), "a", settings).await;
    bp.send(&Command::Register(rec("s1"))).expect("send");
    bp.send(&persist("s1", 1)).expect("send");
    bp.flush().await.expect("flush");
    assert!(matches!(next_other(&mut rx).await, Event::Applied(true)));
    // Overflow: the writer goes down and up while we read nothing.
    let results: Vec<_> = (0..3).map(|_| bp.send(&Command::Heartbeat)).collect();
    assert!(matches!(results[2], Err(Error::QueueFull)));
    // Its answer comes once the writer has handled the overflow: Down and
    // Up are in the channel by then.
    assert!(matches!(bp.flush().await, Err(Error::Down)));
    // Sent in the old up period, as the caller sees it: dropped.
    bp.send(&persist("s1", 2)).expect("queued");
    assert!(matches!(bp.flush().await, Err(Error::Down)));
    assert!(matches!(
        next_other(&mut rx).await,
        Event::Down(Error::QueueFull)
    ));
    assert!(matches!(next_other(&mut rx).await, Event::Up));
    // Had the stale one run, this one would be refused (not the next seq).
    bp.send(&persist("s1", 2)).expect("send");
    bp.flush().await.expect("flush");
    assert!(matches!(next_other(&mut rx).await, Event::Applied(true)));
    assert!(rx.try_recv().is_err(), "nothing else");
}

#[tokio::test]
async fn passwords_are_sent_and_a_wrong_one_is_an_error() {
    let redis = RedisServer::start_with_password("s3cret");
    let (bp, mut rx) = connect(&redis.url(), "a", quiet(StoreConfig::default())).await;
    bp.send(&Command::Register(rec("s1"))).expect("send");
    bp.send(&join(1, "s1")).expect("send");
    assert!(matches!(
        next_push(&mut rx).await,
        Push::JoinAnswer { req: 1, .. }
    ));
    let wrong = format!("redis://:nope@127.0.0.1:{}/", redis.port);
    let err = RedisBackplane::connect(&wrong, NodeId::new("b"), quiet(StoreConfig::default()))
        .await
        .expect_err("a wrong password");
    assert!(matches!(err, Error::Redis(_)), "{err}");
    let err = RedisBackplane::connect("nonsense://x", NodeId::new("b"), Settings::default())
        .await
        .expect_err("a bad url");
    assert!(matches!(err, Error::Redis(_)), "{err}");
}

#[tokio::test]
async fn heartbeats_keep_nodes_alive_and_a_silent_one_dies() {
    let redis = RedisServer::start();
    let cfg = StoreConfig {
        node_timeout: Duration::from_millis(1500),
        ..StoreConfig::default()
    };
    let (a, _a_rx) = connect(&redis.url(), "a", Settings::new(cfg)).await;
    let (b, mut b_rx) = connect(&redis.url(), "b", Settings::new(cfg)).await;
    a.flush().await.expect("flush");
    b.flush().await.expect("flush");
    // Several timeouts pass: the heartbeats keep both alive.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert!(b_rx.try_recv().is_err(), "nothing happened yet");
    drop(a);
    match next(&mut b_rx, Duration::from_secs(10)).await {
        Event::Push(p) => assert_eq!(
            p,
            Push::NodeDied {
                node: NodeId::new("a")
            }
        ),
        other => panic!("{other:?}"),
    }
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn rediss_with_a_private_ca() {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let dir = std::env::temp_dir().join(format!("sb-backplane-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    let (redis, tls_port) = RedisServer::start_tls(&cert, &key);
    let url = format!("rediss://127.0.0.1:{tls_port}/");

    // Not signed by a system root: refused, as an error.
    let err = RedisBackplane::connect(&url, NodeId::new("a"), quiet(StoreConfig::default()))
        .await
        .expect_err("an unknown CA");
    assert!(matches!(err, Error::Redis(_)), "{err}");

    let mut settings = quiet(StoreConfig::default());
    settings.tls_root_ca = Some(ck.cert.pem().into_bytes());
    let (bp, mut rx) = connect(&url, "a", settings).await;
    bp.send(&Command::Register(rec("s1"))).expect("send");
    bp.send(&join(1, "s1")).expect("send");
    assert!(matches!(
        next_push(&mut rx).await,
        Push::JoinAnswer { req: 1, .. }
    ));
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn used_memory(admin: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(admin)
        .await
        .expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

/// The figures of the crate doc: what a session costs in Redis.
#[tokio::test]
async fn redis_memory_per_session() {
    let redis = RedisServer::start();
    // Room for every answer: nobody reads them here.
    let mut settings = quiet(StoreConfig::default());
    settings.events = 1 << 16;
    let (bp, _rx) = connect(&redis.url(), "node-1", settings).await;
    let mut admin = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin");
    bp.send(&Command::Heartbeat).expect("send");
    bp.flush().await.expect("flush");
    const N: u64 = 2000;
    let record = |i: u64| SessionRecord {
        session: format!("{i:016x}{i:016x}").into(),
        token: format!("{i:032x}{i:032x}").into(),
        peer: format!("{i:016x}").into(),
        user: Some(format!("user-{i}").into()),
        face: Face::Native,
        seq: 0,
        frames: Vec::new(),
        rooms: Vec::new(),
        epoch: 0,
        base: None,
    };
    let before = used_memory(&mut admin).await;
    for i in 0..N {
        bp.send(&Command::Register(record(i))).expect("send");
    }
    bp.flush().await.expect("flush");
    let records = used_memory(&mut admin).await;
    for i in 0..N {
        let s = record(i).session;
        bp.send(&Command::Join {
            req: i,
            session: s,
            room: format!("room-{}", i / 2).into(),
            meta: None,
            limits: SeatLimits::default(),
            private: None,
            media: MediaKind::Mesh,
            relay: false,
        })
        .expect("send");
    }
    bp.flush().await.expect("flush");
    let seated = used_memory(&mut admin).await;
    for i in 0..N {
        for seq in 1..=10 {
            bp.send(&Command::Persist {
                session: record(i).session,
                epoch: 0,
                seq,
                body: vec![b'x'; 300].into(),
                sent: true,
            })
            .expect("send");
        }
    }
    bp.flush().await.expect("flush");
    let framed = used_memory(&mut admin).await;
    let per = |a: i64, b: i64| (b - a) / N as i64;
    eprintln!(
        "per session: record {} B, a room seat {} B, 10 frames of 300 B {} B",
        per(before, records),
        per(records, seated),
        per(seated, framed)
    );
    assert!(per(before, records) < 2048);
    assert!(per(seated, framed) < 10 * 300 * 2);
}
