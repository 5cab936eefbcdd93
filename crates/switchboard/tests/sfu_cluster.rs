//! SFU rooms across a cluster (PROTOCOL.md §7, docs/scaling.md "SFU rooms
//! and the cluster"): two real switchboard nodes sharing a real
//! redis-server, str0m peers on 127.0.0.1 signaling through either node,
//! and the media of the room relayed by its one media node.

mod sfu_support;

use std::time::Duration;

use serde_json::json;
use sfu_support::{MediaPeer, drive_until, everyone_hears_everyone, report};
use switchboard_testkit::{Redis, Server, WAIT, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// How long ICE, DTLS and the first frames may take on a loaded machine.
const CONNECT: Duration = Duration::from_secs(20);

/// A node of the cluster on `redis`, with its own media socket.
async fn node(redis: &Redis, id: &str) -> Server {
    node_with_timeout(redis, id, "2").await
}

/// A node whose death the others see after `timeout` seconds.
async fn node_with_timeout(redis: &Redis, id: &str, timeout: &str) -> Server {
    let url = redis.url();
    let env = [
        ("SWITCHBOARD_CLUSTER__REDIS_URL", url.as_str()),
        ("SWITCHBOARD_CLUSTER__NODE_ID", id),
        ("SWITCHBOARD_CLUSTER__NODE_TIMEOUT_SECS", timeout),
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

/// One peer per node given (in that order) in room "call", each
/// publishing, once everyone hears everyone.
async fn call_through(nodes: &[&Server]) -> Vec<MediaPeer> {
    let mut room = Vec::new();
    for s in nodes {
        let mut p = MediaPeer::join(s, "call").await;
        p.offer_tracks().await;
        room.push(p);
    }
    let ok = drive_until(&mut room, CONNECT, true, everyone_hears_everyone).await;
    assert!(ok, "before:\n{}", report(&room));
    room
}

fn kill9(s: &Server) {
    signal(s, "KILL");
}

fn signal(s: &Server, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &s.pid().to_string()])
        .status()
        .is_ok_and(|st| st.success());
    assert!(ok, "kill -{sig}");
}

fn media_node_lost(p: &MediaPeer) -> bool {
    p.errors.iter().any(|e| {
        e["code"] == "unavailable"
            && e["room"] == p.room.as_str()
            && e["message"] == "media node lost"
    })
}

/// What a client does on "media node lost": a new RTCPeerConnection (here
/// a new str0m peer and UDP socket) on the same signaling connection,
/// offering again. The fresh peer's own connection (a join of `spare`)
/// only lends its `Rtc`; it takes the old one's place.
async fn relink(server: &Server, old: MediaPeer, spare: &str) -> MediaPeer {
    let mut fresh = MediaPeer::join(server, spare).await;
    let mut old = old;
    std::mem::swap(&mut fresh.ws, &mut old.ws);
    fresh.id = old.id.clone();
    fresh.room = old.room.clone();
    fresh.offer_tracks().await;
    fresh
}

/// The media node is killed mid-call: the store names the node of the
/// remaining members, they hear "media node lost", and their new
/// connections get each other's media through it. Nobody rejoins.
#[tokio::test]
async fn a_killed_media_nodes_room_moves_to_the_members_node() {
    let redis = Redis::start().await;
    let mut na = node(&redis, "na").await;
    let nb = node(&redis, "nb").await;
    let port_b = media_port(&nb);
    let mut room = call_through(&[&na, &nb, &nb]).await;

    kill9(&na);
    assert!(na.wait_exit(WAIT).await.is_some(), "kill -9");
    let mut room: Vec<MediaPeer> = room.drain(1..).collect();
    // Node timeout 2 s, a sweep, and slack for a loaded machine.
    let ok = drive_until(&mut room, Duration::from_secs(15), false, |peers| {
        peers.iter().all(media_node_lost)
    })
    .await;
    assert!(ok, "no \"media node lost\":\n{}", report(&room));

    let mut moved = Vec::new();
    for p in room.drain(..) {
        moved.push(relink(&nb, p, "spare").await);
    }
    let ok = drive_until(&mut moved, CONNECT, true, everyone_hears_everyone).await;
    assert!(ok, "after the move:\n{}", report(&moved));
    let ids: Vec<String> = moved.iter().map(|p| p.id.clone()).collect();
    for p in &moved {
        // B relays now: its answer names B's media socket.
        assert!(
            p.answer_sdp.contains(&format!(" {port_b} typ host")),
            "{}",
            p.answer_sdp
        );
        assert!(p.errors.is_empty(), "{}", report(&moved));
        // The same signaling sessions, still in the room together: nobody
        // left, nobody saw the other's `bye`.
        assert!(
            p.frames.iter().all(|f| f["type"] != "left"
                && !(f["type"] == "bye" && ids.iter().any(|id| f["peer"] == id.as_str()))),
            "{:?}",
            p.frames
        );
    }
}

/// A graceful stop (SIGTERM) of the media node hands its rooms over at
/// once: the members hear "media node lost" well within the node timeout
/// (10 s here), and get each other's media through the other node.
#[tokio::test]
async fn a_stopping_media_node_hands_its_room_over_at_once() {
    let redis = Redis::start().await;
    let mut na = node_with_timeout(&redis, "na", "10").await;
    let nb = node_with_timeout(&redis, "nb", "10").await;
    let port_b = media_port(&nb);
    let mut room = call_through(&[&na, &nb, &nb]).await;

    let stopped = std::time::Instant::now();
    signal(&na, "TERM");
    let mut room: Vec<MediaPeer> = room.drain(1..).collect();
    let ok = drive_until(&mut room, Duration::from_secs(5), false, |peers| {
        peers.iter().all(media_node_lost)
    })
    .await;
    assert!(
        ok,
        "no \"media node lost\" within 5 s of the stop:\n{}",
        report(&room)
    );
    assert!(stopped.elapsed() < Duration::from_secs(10));
    assert!(na.wait_exit(WAIT).await.is_some(), "stopped");

    let mut moved = Vec::new();
    for p in room.drain(..) {
        moved.push(relink(&nb, p, "spare").await);
    }
    let ok = drive_until(&mut moved, CONNECT, true, everyone_hears_everyone).await;
    assert!(ok, "after the hand-over:\n{}", report(&moved));
    for p in &moved {
        assert!(p.answer_sdp.contains(&format!(" {port_b} typ host")));
    }
}
