//! Bad payloads, a Redis that dies and comes back, a full queue, passwords,
//! and the client's own heartbeats and sweeps.

mod support;

use std::time::Duration;

use switchboard_backplane::codec::encode_push;
use switchboard_backplane::{Error, Event, RedisBackplane, Settings, StoreConfig};
use switchboard_signal::Face;
use switchboard_signal::cluster::{Command, NodeId, Push, SeatLimits, SeatOutcome, SessionRecord};
use tokio::sync::mpsc;

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
    }
}

fn quiet(cfg: StoreConfig) -> Settings {
    let mut s = Settings::new(cfg);
    s.heartbeat = false;
    s.sweep = false;
    s
}

async fn next(rx: &mut mpsc::Receiver<Event>, within: Duration) -> Event {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("an event in time")
        .expect("events open")
}

/// The next push, skipping link events.
async fn next_push(rx: &mut mpsc::Receiver<Event>) -> Push {
    for _ in 0..16 {
        if let Event::Push(p) = next(rx, Duration::from_secs(10)).await {
            return p;
        }
    }
    panic!("no push");
}

#[tokio::test]
async fn garbage_on_the_node_channel_is_dropped_and_the_stream_goes_on() {
    let redis = RedisServer::start();
    let (bp, mut rx) = RedisBackplane::connect(
        &redis.url(),
        NodeId::new("a"),
        quiet(StoreConfig::default()),
    )
    .await
    .expect("connect");
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
            outcome: SeatOutcome::Seated { peers: vec![] }
        }
    );
}

#[tokio::test]
async fn a_killed_redis_is_reported_and_the_client_recovers_after_a_restart() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let cfg = StoreConfig {
        node_timeout: Duration::from_millis(600),
        ..StoreConfig::default()
    };
    let mut settings = Settings::new(cfg);
    settings.response_timeout = Duration::from_secs(2);
    let (bp, mut rx) = RedisBackplane::connect(&redis.url(), NodeId::new("a"), settings)
        .await
        .expect("connect");
    bp.send(&Command::Register(rec("s1"))).expect("send");
    bp.flush().await.expect("flush");

    redis.kill();
    match next(&mut rx, Duration::from_secs(10)).await {
        Event::Down(e) => eprintln!("down: {e}"),
        other => panic!("expected Down, got {other:?}"),
    }
    // Commands while down are dropped, never a panic.
    for i in 0..10 {
        let _ = bp.send(&join(i, "s1"));
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
            Event::Push(p) => panic!("a push from before the restart: {p:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(up, "never came back up");
    // The core resyncs; Redis lost everything, so its session is lost.
    bp.send(&Command::Resync {
        sessions: vec![rec("s1")],
    })
    .expect("send");
    bp.send(&Command::Register(rec("s2"))).expect("send");
    bp.send(&join(42, "s2")).expect("send");
    bp.flush().await.expect("flush after up");
    assert_eq!(
        next_push(&mut rx).await,
        Push::Resynced {
            lost: vec!["s1".into()]
        }
    );
    assert_eq!(
        next_push(&mut rx).await,
        Push::JoinAnswer {
            req: 42,
            outcome: SeatOutcome::Seated { peers: vec![] }
        }
    );
    drop(redis);
}

#[tokio::test]
async fn a_full_queue_drops_and_goes_down_then_up() {
    let redis = RedisServer::start();
    let mut settings = quiet(StoreConfig::default());
    settings.queue = 2;
    let (bp, mut rx) = RedisBackplane::connect(&redis.url(), NodeId::new("a"), settings)
        .await
        .expect("connect");
    // The test runtime runs one task at a time: nothing drains the queue
    // while this loop runs.
    let results: Vec<_> = (0..4).map(|_| bp.send(&Command::Heartbeat)).collect();
    assert!(results[..2].iter().all(Result::is_ok));
    assert!(matches!(results[2], Err(Error::QueueFull)));
    assert!(matches!(
        next(&mut rx, Duration::from_secs(10)).await,
        Event::Down(Error::QueueFull)
    ));
    assert!(matches!(
        next(&mut rx, Duration::from_secs(10)).await,
        Event::Up
    ));
    bp.send(&Command::Register(rec("s1"))).expect("send");
    bp.send(&join(7, "s1")).expect("send");
    assert!(matches!(
        next_push(&mut rx).await,
        Push::JoinAnswer { req: 7, .. }
    ));
}

#[tokio::test]
async fn passwords_are_sent_and_a_wrong_one_is_an_error() {
    let redis = RedisServer::start_with_password("s3cret");
    let (bp, mut rx) = RedisBackplane::connect(
        &redis.url(),
        NodeId::new("a"),
        quiet(StoreConfig::default()),
    )
    .await
    .expect("connect with the password");
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
    let (a, _a_rx) = RedisBackplane::connect(&redis.url(), NodeId::new("a"), Settings::new(cfg))
        .await
        .expect("connect a");
    let (b, mut b_rx) = RedisBackplane::connect(&redis.url(), NodeId::new("b"), Settings::new(cfg))
        .await
        .expect("connect b");
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
    let (bp, mut rx) = RedisBackplane::connect(&url, NodeId::new("a"), settings)
        .await
        .expect("connect over TLS");
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
    let (bp, _rx) = RedisBackplane::connect(
        &redis.url(),
        NodeId::new("node-1"),
        quiet(StoreConfig::default()),
    )
    .await
    .expect("connect");
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
        })
        .expect("send");
    }
    bp.flush().await.expect("flush");
    let seated = used_memory(&mut admin).await;
    for i in 0..N {
        for seq in 1..=10 {
            bp.send(&Command::Persist {
                session: record(i).session,
                seq,
                body: vec![b'x'; 300].into(),
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
