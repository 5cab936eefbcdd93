//! Several real switchboard processes and a real redis-server
//! (PROTOCOL.md §6): rooms across nodes, `kill -9` of a node mid-call, a
//! graceful stop, Redis going away and coming back.

mod http_support;

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_testkit::{Client, Redis, Server, WAIT, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A node of the cluster on `redis`, with a short node timeout so that
/// deaths are seen within the test's patience.
async fn node(redis: &Redis, id: &str, extra: &[(&str, &str)]) -> Server {
    let url = redis.url();
    let mut env = vec![
        ("SWITCHBOARD_CLUSTER__REDIS_URL", url.as_str()),
        ("SWITCHBOARD_CLUSTER__NODE_ID", id),
        ("SWITCHBOARD_CLUSTER__NODE_TIMEOUT_SECS", "2"),
        ("SWITCHBOARD_SESSION__RESUME_GRACE_SECS", "4"),
    ];
    env.extend_from_slice(extra);
    let s = Server::start(BIN, &env, &[]).await;
    wait_ready(&s, 200).await;
    s
}

/// Waits (bounded) until `/readyz` answers `status`.
async fn wait_ready(s: &Server, status: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (got, _) = http_get(&s.http, "/readyz", &[]).await;
        if got == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {got}, wanted {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two nodes on `redis`, `a` on the first and `b` on the second, both in
/// room `r` (`a` has had `b`'s `other_joined`).
async fn pair(redis: &Redis, extra: &[(&str, &str)]) -> (Server, Server, Client, Client) {
    let n1 = node(redis, "n1", extra).await;
    let n2 = node(redis, "n2", extra).await;
    let mut a = Client::connect(&n1.ws_url("")).await;
    let mut b = Client::connect(&n2.ws_url("")).await;
    a.join("r").await;
    b.join("r").await;
    a.recv_type("other_joined").await;
    (n1, n2, a, b)
}

fn resume_url(s: &Server, c: &Client) -> String {
    s.ws_url(&format!(
        "resume={}&resume_token={}&last_seq={}",
        c.session(),
        c.resume_token(),
        c.last_seq
    ))
}

async fn message(c: &mut Client, room: &str, data: Value, id: u64) -> Value {
    c.request(json!({"type": "message", "room": room, "data": data}), id)
        .await
}

#[tokio::test]
async fn a_room_spans_two_nodes() {
    let redis = Redis::start().await;
    let n1 = node(&redis, "n1", &[]).await;
    let n2 = node(&redis, "n2", &[]).await;
    let mut a = Client::connect(&n1.ws_url("")).await;
    let mut b = Client::connect(&n2.ws_url("")).await;
    assert_eq!(a.join("r").await["type"], "joined");
    let jb = b.join("r").await;
    assert_eq!(jb["peers"][0]["peer"], a.peer(), "{jb}");
    let other = a.recv_type("other_joined").await;
    assert_eq!(other["peer"], b.peer());

    let ack = message(&mut a, "r", json!({"sdp": "offer"}), 1).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    let m = b.recv_type("message").await;
    assert_eq!(
        (m["from"].clone(), m["data"].clone()),
        (json!(a.peer()), json!({"sdp": "offer"}))
    );
    let to = b
        .request(
            json!({"type": "message", "room": "r", "to": a.peer(), "data": 2}),
            2,
        )
        .await;
    assert_eq!(to["delivered"], 1, "{to}");
    assert_eq!(a.recv_type("message").await["data"], 2);
    let nobody = b
        .request(
            json!({"type": "message", "room": "r", "to": "nobody", "data": 2}),
            3,
        )
        .await;
    assert_eq!(nobody["code"], "no_such_peer", "{nobody}");

    let left = b.request(json!({"type": "leave", "room": "r"}), 4).await;
    assert_eq!(left["type"], "left");
    assert_eq!(a.recv_type("bye").await["peer"], b.peer());
}

#[tokio::test]
async fn capacity_holds_across_nodes() {
    let redis = Redis::start().await;
    let max = [("SWITCHBOARD_ROOMS__MAX_PEERS", "2")];
    let n1 = node(&redis, "n1", &max).await;
    let n2 = node(&redis, "n2", &max).await;
    let mut clients = Vec::new();
    for i in 0..6 {
        let s = if i % 2 == 0 { &n1 } else { &n2 };
        clients.push(Client::connect(&s.ws_url("")).await);
    }
    for c in &mut clients {
        c.send(json!({"type": "join", "room": "r", "id": 1})).await;
    }
    let mut joined = 0;
    let mut full = 0;
    for c in &mut clients {
        let mut reply = c.recv().await;
        while reply["reply_to"] != 1 {
            reply = c.recv().await;
        }
        match reply["type"].as_str() {
            Some("joined") => joined += 1,
            Some("full") => full += 1,
            other => panic!("{other:?}: {reply}"),
        }
    }
    assert_eq!((joined, full), (2, 4));
}

#[tokio::test]
async fn a_killed_nodes_client_resumes_on_another_with_what_was_counted() {
    let redis = Redis::start().await;
    let (n1, mut n2, mut a, b) = pair(&redis, &[]).await;
    // b's client is slow: what a sends now is counted, b has not read it.
    for i in 0..3 {
        assert_eq!(message(&mut a, "r", json!(i), 10 + i).await["delivered"], 1);
    }
    nix_kill(n2.pid());
    assert!(n2.wait_exit(WAIT).await.is_some(), "kill -9");
    // b's client reconnects to the other node within a moment.
    let mut b2 = Client::connect(&resume_url(&n1, &b)).await;
    assert_eq!(b2.hello["type"], "resumed", "{}", b2.hello);
    b2.last_seq = b.last_seq;
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = b2.recv_type("message").await;
        got.push(m["data"].clone());
    }
    assert_eq!(got, [json!(0), json!(1), json!(2)]);
    // The call goes on; nobody saw `bye`.
    assert_eq!(
        message(&mut a, "r", json!("after"), 20).await["delivered"],
        1
    );
    assert_eq!(b2.recv_type("message").await["data"], "after");
    let back = message(&mut b2, "r", json!("back"), 21).await;
    assert_eq!(back["delivered"], 1, "{back}");
    assert_eq!(a.recv_type("message").await["data"], "back");
    // Past node timeout and grace: still no `bye`.
    a.expect_silence(Duration::from_secs(7)).await;
}

#[tokio::test]
async fn a_dead_nodes_session_that_never_returns_ends_with_bye() {
    let redis = Redis::start().await;
    let (n1, mut n2, mut a, b) = pair(&redis, &[]).await;
    let started = tokio::time::Instant::now();
    nix_kill(n2.pid());
    let _ = n2.wait_exit(WAIT).await;
    // node timeout 2 s + grace 4 s + 5 s of slack (PROTOCOL.md §6).
    let bye = tokio::time::timeout(Duration::from_secs(11), a.recv_type("bye"))
        .await
        .expect("bye within node_timeout + grace + 5 s");
    assert_eq!(bye["peer"], b.peer());
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "not before the grace"
    );
    // No ghost: a fresh join sees only a.
    let mut c = Client::connect(&n1.ws_url("")).await;
    let jc = c.join("r").await;
    assert_eq!(jc["peers"].as_array().map(Vec::len), Some(1), "{jc}");
}

#[tokio::test]
async fn a_graceful_stop_closes_with_1012_and_the_client_resumes_elsewhere() {
    let redis = Redis::start().await;
    let (n1, mut n2, mut a, mut b) = pair(&redis, &[]).await;
    nix_term(n2.pid());
    assert_eq!(b.closed_code().await, Some(1012));
    let mut b2 = Client::connect(&resume_url(&n1, &b)).await;
    assert_eq!(b2.hello["type"], "resumed", "{}", b2.hello);
    b2.last_seq = b.last_seq;
    assert!(n2.wait_exit(WAIT).await.is_some(), "the node stops");
    assert_eq!(message(&mut a, "r", json!(1), 1).await["delivered"], 1);
    assert_eq!(b2.recv_type("message").await["data"], 1);
    a.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn redis_down_is_unavailable_and_ready_again_when_back() {
    let mut redis = Redis::start().await;
    let n1 = node(&redis, "n1", &[]).await;
    let n2 = node(&redis, "n2", &[]).await;
    let mut a = Client::connect(&n1.ws_url("")).await;
    let mut a2 = Client::connect(&n1.ws_url("")).await;
    let mut b = Client::connect(&n2.ws_url("")).await;
    a.join("r").await;
    a2.join("r").await;
    b.join("r").await;
    redis.kill().await;
    wait_ready(&n1, 503).await;
    let (health, _) = http_get(&n1.http, "/healthz", &[]).await;
    assert_eq!(health, 200, "the process still serves");
    let join = a.request(json!({"type": "join", "room": "s"}), 1).await;
    assert_eq!(join["code"], "unavailable", "{join}");
    // The peers on the same node still talk.
    let ack = message(&mut a, "r", json!("local"), 2).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    assert_eq!(a2.recv_type("message").await["data"], "local");
    // Redis comes back (empty): the nodes resync, and the room spans both
    // nodes again.
    redis.restart().await;
    wait_ready(&n1, 200).await;
    wait_ready(&n2, 200).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut id = 10;
    loop {
        id += 1;
        let ack = message(&mut b, "r", json!("again"), id).await;
        if ack["delivered"] == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no resync: {ack}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.recv_type("message").await["data"], "again");
}

fn nix_kill(pid: u32) {
    signal(pid, "KILL");
}

fn nix_term(pid: u32) {
    signal(pid, "TERM");
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

#[tokio::test]
async fn welcome_lists_the_fleets_turn_servers() {
    let other = "turn:turn2.example.test:3478?transport=udp";
    let servers = format!("[\"{other}\"]");
    let s = Server::start(BIN, &[("SWITCHBOARD_TURN__SERVERS", servers.as_str())], &[]).await;
    let c = Client::connect(&s.ws_url("")).await;
    let urls = &c.hello["ice_servers"][0]["urls"];
    let urls: Vec<&str> = urls
        .as_array()
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(urls.contains(&other), "{urls:?}");
    assert!(
        urls.iter().any(|u| u.starts_with("turn:127.0.0.1:")),
        "{urls:?}"
    );
    assert!(c.hello["ice_servers"][0]["credential"].is_string());
}

#[tokio::test]
async fn a_long_replay_through_another_node_is_not_a_slow_reader() {
    let redis = Redis::start().await;
    let fast = [("SWITCHBOARD_LIMITS__RATE_PER_SEC", "0")];
    let (n1, _n2, mut a, b) = pair(&redis, &fast).await;
    let (session, token, last) = (b.session(), b.resume_token(), b.last_seq);
    b.cut();
    // More than the outbound queue holds (half the replay buffer).
    for i in 0..700u64 {
        a.send(json!({"type": "message", "room": "r", "data": i}))
            .await;
    }
    let ack = message(&mut a, "r", json!("last"), 1).await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    let url = n1.ws_url(&format!(
        "resume={session}&resume_token={token}&last_seq={last}"
    ));
    let mut b2 = Client::connect(&url).await;
    assert_eq!(b2.hello["type"], "resumed", "{}", b2.hello);
    b2.last_seq = last;
    for i in 0..700u64 {
        let m = b2.recv_type("message").await;
        assert_eq!(m["data"], i);
    }
    assert_eq!(b2.recv_type("message").await["data"], "last");
}

#[tokio::test]
async fn admin_views_and_kicks_cover_every_node() {
    let redis = Redis::start().await;
    let token = "cluster-admin-token-0123456789";
    let admin_env = [
        ("SWITCHBOARD_ADMIN__LISTEN", "127.0.0.1:0"),
        ("SWITCHBOARD_ADMIN__TOKEN", token),
    ];
    let (n1, _n2, mut a, mut b) = pair(&redis, &admin_env).await;
    let admin = n1.ready["admin"]
        .as_str()
        .expect("admin listener")
        .to_owned();
    let auth = format!("Bearer {token}");
    let call = |method: &'static str, path: String| {
        let (admin, auth) = (admin.clone(), auth.clone());
        async move {
            let a = http_support::request(&admin, method, &path, &[("Authorization", &auth)], b"")
                .await;
            (a.status, a.json())
        }
    };

    // Node 1's view lists the peer that is on node 2, and says where it is.
    let (status, room) = call("GET", "/admin/api/rooms/r".into()).await;
    assert_eq!(status, 200, "{room}");
    let nodes: Vec<(&str, &str)> = room["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| Some((p["peer"].as_str()?, p["node"].as_str()?)))
        .collect();
    let (pa, pb) = (a.peer(), b.peer());
    assert_eq!(nodes, [(pa.as_str(), "n1"), (pb.as_str(), "n2")], "{room}");
    let (_, rooms) = call("GET", "/admin/api/rooms".into()).await;
    assert_eq!(rooms["rooms"][0]["peers"], 2, "{rooms}");

    // A kick asked of node 1 reaches the peer on node 2.
    let (status, kicked) = call("DELETE", format!("/admin/api/rooms/r/peers/{}", b.peer())).await;
    assert_eq!(status, 200, "{kicked}");
    let err = b.recv_type("error").await;
    assert_eq!(
        (&err["code"], &err["room"]),
        (&json!("kicked"), &json!("r"))
    );
    assert_eq!(b.recv_type("left").await["room"], "r");
    assert_eq!(a.recv_type("bye").await["peer"], b.peer());
    let (_, room) = call("GET", "/admin/api/rooms/r".into()).await;
    assert_eq!(room["peers"].as_array().map(Vec::len), Some(1), "{room}");
}
