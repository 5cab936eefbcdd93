//! SFU rooms across a cluster (PROTOCOL.md §7, docs/scaling.md "SFU rooms
//! and the cluster"): two real switchboard nodes sharing a real
//! redis-server, str0m peers on 127.0.0.1 signaling through either node,
//! and the media of the room relayed by its one media node.

mod sfu_support;

use std::time::Duration;

use serde_json::json;
use sfu_support::{MediaPeer, drive_until};
use switchboard_testkit::{Redis, Server, WAIT, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// How long ICE, DTLS and the first frames may take on a loaded machine.
const CONNECT: Duration = Duration::from_secs(20);

/// A node of the cluster on `redis`, with its own media socket.
async fn node(redis: &Redis, id: &str) -> Server {
    let url = redis.url();
    let env = [
        ("SWITCHBOARD_CLUSTER__REDIS_URL", url.as_str()),
        ("SWITCHBOARD_CLUSTER__NODE_ID", id),
        ("SWITCHBOARD_CLUSTER__NODE_TIMEOUT_SECS", "2"),
    ];
    let s = Server::start(BIN, &env, &[]).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = http_get(&s.http, "/readyz", &[]).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id}: /readyz stayed {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s
}

fn media_port(s: &Server) -> u16 {
    let media = s.ready["media"]
        .as_str()
        .expect("READY names the media socket");
    media
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// The value of the metric line `name` (no labels) in `/metrics`.
async fn metric(s: &Server, name: &str) -> Option<f64> {
    let (status, body) = http_get(&s.http, "/metrics", &[]).await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn everyone_hears_everyone(peers: &[MediaPeer]) -> bool {
    peers.iter().all(|p| {
        peers
            .iter()
            .filter(|q| q.id != p.id)
            .all(|q| p.received_from(&q.id) >= 4)
    })
}

fn report(peers: &[MediaPeer]) -> String {
    peers
        .iter()
        .map(|p| {
            format!(
                "{}: connected={} answers={} offers={} streams={:?} received={:?} errors={:?}",
                p.id, p.connected, p.answers, p.server_offers, p.streams, p.received, p.errors
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The room is made through node A, so A is its media node; a peer that
/// signals through B publishes to it and receives from it all the same,
/// with its media going straight to A's media socket.
#[tokio::test]
async fn peers_signaling_through_two_nodes_share_one_media_node() {
    let redis = Redis::start().await;
    let na = node(&redis, "na").await;
    let nb = node(&redis, "nb").await;
    let (port_a, port_b) = (media_port(&na), media_port(&nb));
    assert_ne!(port_a, port_b);

    let mut room = Vec::new();
    let mut pa = MediaPeer::join(&na, "call").await;
    pa.offer_tracks().await;
    room.push(pa);
    let mut pb = MediaPeer::join(&nb, "call").await;
    pb.offer_tracks().await;
    room.push(pb);
    let ok = drive_until(&mut room, CONNECT, true, everyone_hears_everyone).await;
    assert!(ok, "a on A, b on B:\n{}", report(&room));
    for p in &room {
        assert_eq!(p.answers, 1, "one answer to the first offer");
        assert!(p.errors.is_empty(), "{}", report(&room));
        let other = &room.iter().find(|q| q.id != p.id).expect("two").id;
        assert_eq!(p.live_from(other), 2, "{}", report(&room));
    }
    // b's answer came through B, and names A's media socket: b's media
    // goes to A, not to B.
    let b_answer = &room[1].answer_sdp;
    assert!(
        b_answer.contains(&format!(" {port_a} typ host")),
        "{b_answer}"
    );
    assert!(!b_answer.contains(&format!(" {port_b} typ host")));

    // A late joiner through B: everyone gets everyone, and its server
    // offers (renegotiations for the others' tracks) come through B too.
    let mut late = MediaPeer::join(&nb, "call").await;
    late.offer_tracks().await;
    room.push(late);
    let ok = drive_until(&mut room, CONNECT, true, everyone_hears_everyone).await;
    assert!(ok, "a on A, b and c on B:\n{}", report(&room));
    assert!(room[1].server_offers >= 1, "{}", report(&room));
    for p in &room {
        assert!(p.errors.is_empty(), "{}", report(&room));
    }
    // A's SFU holds all three; B's none.
    assert_eq!(metric(&na, "switchboard_sfu_peers").await, Some(3.0));
    assert_eq!(metric(&nb, "switchboard_sfu_peers").await, Some(0.0));

    // b leaves through B: A's SFU drops its tracks from the others.
    let mut gone = room.remove(1);
    gone.ws.send(json!({"type": "leave", "room": "call"})).await;
    let ok = drive_until(&mut room, CONNECT, true, |peers| {
        peers.iter().all(|p| p.live_from(&gone.id) == 0)
    })
    .await;
    assert!(ok, "{} is still sent:\n{}", gone.id, report(&room));
    assert_eq!(metric(&na, "switchboard_sfu_peers").await, Some(2.0));
}
