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
