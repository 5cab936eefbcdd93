//! The admin API (PROTOCOL.md §8) from the outside: its own listener, the
//! bearer token, JSON errors, and drain.

mod http_support;
mod turn_support;

use http_support::request;
use serde_json::json;
use switchboard_testkit::{Client, Server, WAIT, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const TOKEN: &str = "test-admin-token-0123456789";

async fn server() -> (Server, String) {
    let s = Server::start(
        BIN,
        &[
            ("SWITCHBOARD_ADMIN__LISTEN", "127.0.0.1:0"),
            ("SWITCHBOARD_ADMIN__TOKEN", TOKEN),
            ("SWITCHBOARD_TURN__USERS", "{alice=\"alice-pw\"}"),
        ],
        &[],
    )
    .await;
    let admin = s.ready["admin"]
        .as_str()
        .expect("READY names the admin listener")
        .to_owned();
    (s, admin)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The status of a WebSocket upgrade to `url`.
async fn upgrade_status(url: &str) -> u16 {
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("timeout")
    {
        Ok((_ws, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn every_request_needs_the_token_and_errors_are_json() {
    let (_s, admin) = server().await;
    let wrong = bearer("test-admin-token-0123456780");
    let right = bearer(TOKEN);
    for headers in [vec![], vec![("Authorization", wrong.as_str())]] {
        for (method, path) in [("POST", "/admin/api/drain"), ("GET", "/admin/api/nothing")] {
            let a = request(&admin, method, path, &headers, b"").await;
            assert_eq!(a.status, 401, "{method} {path} {headers:?}: {a:?}");
            assert_eq!(a.json()["error"]["code"], "unauthorized", "{a:?}");
            assert!(a.json()["error"]["message"].is_string());
        }
    }
    let auth = [("Authorization", right.as_str())];
    let a = request(&admin, "GET", "/admin/api/nothing", &auth, b"").await;
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(a.json()["error"]["code"], "not_found");
    let a = request(&admin, "GET", "/admin/api/drain", &auth, b"").await;
    assert_eq!(a.status, 405, "{a:?}");
    assert_eq!(a.json()["error"]["code"], "method_not_allowed");
    let huge = vec![b'x'; 1 << 20];
    let a = request(&admin, "POST", "/admin/api/drain", &auth, &huge).await;
    assert_eq!(a.status, 413, "{a:?}");
    assert_eq!(a.json()["error"]["code"], "too_large");
}

#[tokio::test]
async fn drain_refuses_new_sessions_and_serves_the_open_ones() {
    let (s, admin) = server().await;
    let turn_udp: std::net::SocketAddr = s.ready["turn_udp"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("READY names the TURN UDP listener");
    let turn = |conn| turn_support::TurnClient::new(conn, "alice", "alice-pw");
    let mut old = turn(turn_support::Conn::udp(turn_udp).await);
    assert!(
        old.allocate().await.is_ok(),
        "TURN allocates before the drain"
    );
    assert_eq!(http_get(&s.http, "/readyz", &[]).await.0, 200);
    let mut a = Client::connect(&s.ws_url("")).await;
    let mut b = Client::connect(&s.ws_url("")).await;
    a.join("r").await;
    b.join("r").await;
    a.recv_type("other_joined").await;

    // A request refused for its token changes nothing.
    let refused = request(&admin, "POST", "/admin/api/drain", &[], b"").await;
    assert_eq!(refused.status, 401);
    assert_eq!(http_get(&s.http, "/readyz", &[]).await.0, 200);

    let right = bearer(TOKEN);
    let drained = request(
        &admin,
        "POST",
        "/admin/api/drain",
        &[("Authorization", right.as_str())],
        b"",
    )
    .await;
    assert_eq!(drained.status, 200, "{drained:?}");
    assert_eq!(drained.json(), json!({"draining": true}));

    let (status, body) = http_get(&s.http, "/readyz", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(http_get(&s.http, "/healthz", &[]).await.0, 200);
    assert_eq!(upgrade_status(&s.ws_url("")).await, 503);
    let (status, _) = http_get(&s.http, "/socket.io/?EIO=4&transport=polling", &[]).await;
    assert_eq!(status, 503, "a new Socket.IO session is refused too");
    let mut new = turn(turn_support::Conn::udp(turn_udp).await);
    assert_eq!(
        new.allocate().await,
        Err(508),
        "TURN takes no new allocation"
    );
    assert!(
        turn_support::is_success(&old.ask(switchboard_stun::Method::REFRESH, |_| {}).await),
        "the open allocation is refreshed"
    );

    // The open sessions still relay, both ways.
    a.send(json!({"type":"message","room":"r","data":{"n":1}}))
        .await;
    assert_eq!(b.recv_type("message").await["data"]["n"], 1);
    b.send(json!({"type":"message","room":"r","data":{"n":2}}))
        .await;
    assert_eq!(a.recv_type("message").await["data"]["n"], 2);
}

#[tokio::test]
async fn a_reachable_admin_listener_without_a_token_refuses_to_start() {
    let child = tokio::process::Command::new(BIN)
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--turn-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "0.0.0.0:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("it must exit, not serve")
        .expect("wait");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin.token"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("READY"));
}

/// An authorized admin request; the answer's status and JSON body.
async fn admin_call(admin: &str, method: &str, path: &str) -> (u16, serde_json::Value) {
    let auth = bearer(TOKEN);
    let a = request(
        admin,
        method,
        path,
        &[("Authorization", auth.as_str())],
        b"",
    )
    .await;
    let body = if a.body.is_empty() {
        serde_json::Value::Null
    } else {
        a.json()
    };
    (a.status, body)
}

#[tokio::test]
async fn room_views_kick_and_close_room() {
    let (s, admin) = server().await;
    let mut a = Client::connect(&s.ws_url("")).await;
    let mut b = Client::connect(&s.ws_url("")).await;
    let mut c = Client::connect(&s.ws_url("")).await;
    a.join("lobby").await;
    b.join("lobby").await;
    a.recv_type("other_joined").await;
    c.join("quiet").await;

    let (status, list) = admin_call(&admin, "GET", "/admin/api/rooms").await;
    assert_eq!(status, 200, "{list}");
    let rooms = list["rooms"].as_array().expect("rooms");
    assert_eq!(rooms.len(), 2, "{list}");
    assert_eq!(rooms[0]["room"], "lobby");
    assert_eq!(rooms[0]["peers"], 2);
    assert_eq!(rooms[0]["media"], "mesh");
    assert!(
        rooms[0]["created"].as_u64().unwrap_or(0) > 1_700_000_000,
        "{list}"
    );
    assert_eq!(rooms[1]["room"], "quiet");
    assert_eq!(rooms[1]["peers"], 1);

    let (status, lobby) = admin_call(&admin, "GET", "/admin/api/rooms/lobby").await;
    assert_eq!(status, 200, "{lobby}");
    let peers: Vec<&str> = lobby["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["peer"].as_str())
        .collect();
    assert_eq!(peers, [a.peer(), b.peer()], "{lobby}");
    assert!(lobby["peers"][0]["joined"].as_u64().unwrap_or(0) > 1_700_000_000);

    // Unknown room, unknown peer: 404 as JSON, and nothing changes.
    let (status, err) = admin_call(&admin, "GET", "/admin/api/rooms/nowhere").await;
    assert_eq!((status, &err["error"]["code"]), (404, &json!("not_found")));
    let (status, _) = admin_call(&admin, "DELETE", "/admin/api/rooms/lobby/peers/nobody").await;
    assert_eq!(status, 404);
    let (status, _) = admin_call(&admin, "DELETE", "/admin/api/rooms/nowhere").await;
    assert_eq!(status, 404);

    // Kick b: b gets `kicked` then `left`, a gets `bye`, b's session stays.
    let path = format!("/admin/api/rooms/lobby/peers/{}", b.peer());
    let (status, kicked) = admin_call(&admin, "DELETE", &path).await;
    assert_eq!(status, 200, "{kicked}");
    assert_eq!(kicked, json!({"kicked": 1}));
    let err = b.recv_type("error").await;
    assert_eq!(
        (&err["code"], &err["room"]),
        (&json!("kicked"), &json!("lobby"))
    );
    assert_eq!(b.recv_type("left").await["room"], "lobby");
    let bye = a.recv_type("bye").await;
    assert_eq!(bye["peer"], b.peer());
    // b is still connected and may come back.
    b.join("lobby").await;
    a.recv_type("other_joined").await;

    // Close the room: both kicked.
    let (status, closed) = admin_call(&admin, "DELETE", "/admin/api/rooms/lobby").await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed, json!({"kicked": 2}));
    for peer in [&mut a, &mut b] {
        assert_eq!(peer.recv_type("error").await["code"], "kicked");
        assert_eq!(peer.recv_type("left").await["room"], "lobby");
    }
    let (status, _) = admin_call(&admin, "GET", "/admin/api/rooms/lobby").await;
    assert_eq!(status, 404, "an emptied room is gone");
    let (_, list) = admin_call(&admin, "GET", "/admin/api/rooms").await;
    assert_eq!(list["rooms"].as_array().map(Vec::len), Some(1), "{list}");

    // Without the token the views are refused too.
    let no = request(&admin, "GET", "/admin/api/rooms", &[], b"").await;
    assert_eq!(no.status, 401);
    let no = request(&admin, "DELETE", "/admin/api/rooms/quiet", &[], b"").await;
    assert_eq!(no.status, 401);
    let (status, quiet) = admin_call(&admin, "GET", "/admin/api/rooms/quiet").await;
    assert_eq!(status, 200);
    assert_eq!(
        quiet["peers"][0]["peer"],
        c.peer(),
        "refused requests changed nothing"
    );
}

#[tokio::test]
async fn turn_allocations_are_listed_and_revoked() {
    let (s, admin) = server().await;
    let turn_udp: std::net::SocketAddr = s.ready["turn_udp"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("READY names the TURN UDP listener");
    let mut alloc =
        turn_support::TurnClient::new(turn_support::Conn::udp(turn_udp).await, "alice", "alice-pw");
    let relayed = alloc.allocate().await.expect("allocate");

    let (status, list) = admin_call(&admin, "GET", "/admin/api/turn/allocations").await;
    assert_eq!(status, 200, "{list}");
    let all = list["allocations"].as_array().expect("allocations");
    assert_eq!(all.len(), 1, "{list}");
    let one = &all[0];
    assert_eq!(one["username"], "alice");
    assert_eq!(one["relayed"], relayed.to_string());
    for key in [
        "id",
        "client",
        "created",
        "expires",
        "bytes_in",
        "bytes_out",
    ] {
        assert!(!one[key].is_null(), "{key} missing: {one}");
    }
    let id = one["id"].as_str().expect("id").to_owned();

    let no = request(
        &admin,
        "DELETE",
        &format!("/admin/api/turn/allocations/{id}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(no.status, 401, "a revoke without the token changes nothing");
    assert!(turn_support::is_success(
        &alloc.ask(switchboard_stun::Method::REFRESH, |_| {}).await
    ));

    let (status, _) = admin_call(&admin, "DELETE", "/admin/api/turn/allocations/ffffffff").await;
    assert_eq!(status, 404);
    let (status, _) = admin_call(&admin, "DELETE", "/admin/api/turn/allocations/not-an-id").await;
    assert_eq!(status, 404);

    let path = format!("/admin/api/turn/allocations/{id}");
    let (status, revoked) = admin_call(&admin, "DELETE", &path).await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(
        turn_support::error_code(&alloc.ask(switchboard_stun::Method::REFRESH, |_| {}).await),
        Some(437),
        "the revoked allocation is gone"
    );
    let (_, list) = admin_call(&admin, "GET", "/admin/api/turn/allocations").await;
    assert_eq!(list, json!({"allocations": []}));
}
