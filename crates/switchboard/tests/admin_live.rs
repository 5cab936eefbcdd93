//! The dashboard's page and live feed (`/admin/`, `/admin/api/live`) from
//! the outside: the page loads without the token, its data never does, the
//! feed is a bounded number of SSE streams of snapshots, and nothing of it
//! is on the public listener.

mod http_support;

use std::time::{Duration, Instant};

use http_support::request;
use serde_json::{Value, json};
use switchboard_testkit::{Client, Server, WAIT, http_get_full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const TOKEN: &str = "test-admin-token-live-0123456789";
const MAX_LIVE_STREAMS: usize = 16;

async fn server() -> (Server, String) {
    let s = Server::start(
        BIN,
        &[
            ("SWITCHBOARD_ADMIN__LISTEN", "127.0.0.1:0"),
            ("SWITCHBOARD_ADMIN__TOKEN", TOKEN),
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

/// An open live stream: the socket, and what was read of it so far.
struct Live {
    sock: TcpStream,
    buf: Vec<u8>,
    /// Where in `buf` the next event's search starts.
    at: usize,
}

impl Live {
    /// Opens `/admin/api/live` with the token and checks the answer's head.
    async fn open(admin: &str) -> Live {
        let mut sock = tokio::time::timeout(WAIT, TcpStream::connect(admin))
            .await
            .expect("connect timed out")
            .expect("connect");
        let head = format!(
            "GET /admin/api/live HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        );
        sock.write_all(head.as_bytes()).await.expect("write");
        let mut live = Live {
            sock,
            buf: Vec::new(),
            at: 0,
        };
        let end = live.read_until(b"\r\n\r\n").await;
        let head = String::from_utf8_lossy(&live.buf[..end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        live.at = end;
        live
    }

    /// Reads until `pat` is in the buffer after `self.at`; where it ends.
    async fn read_until(&mut self, pat: &[u8]) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.buf[self.at..]
                .windows(pat.len())
                .position(|w| w == pat)
            {
                return self.at + i + pat.len();
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline.into(), self.sock.read(&mut chunk))
                .await
                .expect("the live stream went quiet")
                .expect("read");
            assert!(n > 0, "the live stream ended");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next `snapshot` event's JSON. (Each event is one chunk of the
    /// chunked body, so its `data:` line is whole.)
    async fn next(&mut self) -> Value {
        let start = self.read_until(b"event: snapshot\ndata: ").await;
        self.at = start;
        let end = self.read_until(b"\n\n").await;
        self.at = end;
        serde_json::from_slice(&self.buf[start..end - 2]).expect("a snapshot is JSON")
    }
}

#[tokio::test]
async fn the_live_stream_needs_the_token_and_sends_snapshots() {
    let (s, admin) = server().await;
    for auth in [vec![], vec![("Authorization", "Bearer not-the-token")]] {
        let a = request(&admin, "GET", "/admin/api/live", &auth, b"").await;
        assert_eq!(a.status, 401, "{a:?}");
        assert_eq!(a.json()["error"]["code"], "unauthorized");
    }

    let mut a = Client::connect(&s.ws_url("")).await;
    let mut b = Client::connect(&s.ws_url("")).await;
    a.join("dash-room").await;
    b.join("dash-room").await;

    let mut live = Live::open(&admin).await;
    let first = live.next().await;
    for key in [
        "time_ms",
        "draining",
        "counters",
        "gauges",
        "rooms",
        "allocations",
        "errors_by_code",
        "unavailable",
    ] {
        assert!(first.get(key).is_some(), "no {key} in {first}");
    }
    assert!(first["counters"]["messages"].is_u64(), "{first}");
    assert!(first["counters"]["errors"].is_u64(), "{first}");
    assert_eq!(first["gauges"]["rooms"], 1, "{first}");
    assert!(first["allocations"].is_array(), "{first}");
    let rooms = first["rooms"].as_array().expect("rooms");
    assert_eq!(rooms.len(), 1, "{first}");
    assert_eq!(rooms[0]["room"], "dash-room");
    assert_eq!(rooms[0]["peers"], 2);
    // The same rooms as the API lists.
    let bearer = format!("Bearer {TOKEN}");
    let listed = request(
        &admin,
        "GET",
        "/admin/api/rooms",
        &[("Authorization", bearer.as_str())],
        b"",
    )
    .await
    .json();
    assert_eq!(listed["rooms"][0]["room"], rooms[0]["room"]);

    // Traffic shows in later snapshots, about one a second.
    let before = first["counters"]["messages"].as_u64().unwrap_or(0);
    a.send(json!({"type":"message","room":"dash-room","data":"hi"}))
        .await;
    b.recv_type("message").await;
    a.send(json!({"type":"message","room":"nowhere","data":"x"}))
        .await;
    a.recv_type("error").await;
    let started = Instant::now();
    let mut seen = None;
    for _ in 0..10 {
        let snap = live.next().await;
        if snap["counters"]["messages"].as_u64() > Some(before)
            && snap["counters"]["errors"].as_u64() > first["counters"]["errors"].as_u64()
        {
            seen = Some(snap);
            break;
        }
    }
    let snap = seen.expect("the message and the error show in the feed");
    assert!(
        snap["errors_by_code"]["not_in_room"].as_u64() >= Some(1),
        "{snap}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "snapshots come about once a second"
    );
}

#[tokio::test]
async fn live_streams_are_bounded_and_free_their_slot_when_the_client_goes() {
    let (_s, admin) = server().await;
    let mut open = Vec::new();
    for _ in 0..MAX_LIVE_STREAMS {
        open.push(Live::open(&admin).await);
    }
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let a = request(&admin, "GET", "/admin/api/live", &auth, b"").await;
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(a.json()["error"]["code"], "unavailable");
    // Every open one still streams.
    for live in &mut open {
        live.next().await;
    }
    // A client that goes frees its slot (the server notices on its next
    // write, within a second or two).
    drop(open.pop());
    let deadline = Instant::now() + WAIT;
    let mut again = loop {
        let mut sock = TcpStream::connect(&admin).await.expect("connect");
        let head = format!(
            "GET /admin/api/live HTTP/1.1\r\nHost: {admin}\r\nAuthorization: {bearer}\r\n\r\n"
        );
        sock.write_all(head.as_bytes()).await.expect("write");
        let mut first = [0u8; 12];
        tokio::time::timeout(WAIT, sock.read_exact(&mut first))
            .await
            .expect("an answer")
            .expect("read");
        if &first == b"HTTP/1.1 200" {
            break Live {
                sock,
                buf: first.to_vec(),
                at: 0,
            };
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    again.next().await;
}

#[tokio::test]
async fn the_page_loads_without_the_token_on_the_admin_listener_only() {
    let (s, admin) = server().await;
    let (status, head, body) = http_get_full(&admin, "/admin/", &[]).await;
    assert_eq!(status, 200, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("content-security-policy:"), "{head}");
    assert!(body.contains("/admin/admin.js"), "{body}");
    for file in ["/admin/admin.js", "/admin/admin.css"] {
        let (status, _, body) = http_get_full(&admin, file, &[]).await;
        assert_eq!(status, 200, "{file}");
        assert!(!body.is_empty(), "{file}");
    }
    let (status, head, _) = http_get_full(&admin, "/admin", &[]).await;
    assert_eq!(status, 308, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("location: /admin/\r\n"),
        "{head}"
    );

    // Data, and any path that is not one of the page's files, still need it.
    for path in [
        "/admin/api/rooms",
        "/admin/api/live",
        "/admin/api",
        "/admin/nothing.js",
        "/admin/../admin/api/rooms",
    ] {
        let a = request(&admin, "GET", path, &[], b"").await;
        assert_eq!(a.status, 401, "{path}: {a:?}");
    }
    let a = request(&admin, "POST", "/admin/", &[], b"").await;
    assert_eq!(a.status, 401, "{a:?}");

    // The public listener has no dashboard.
    for path in ["/admin/", "/admin", "/admin/admin.js", "/admin/api/live"] {
        let (status, _, body) = http_get_full(&s.http, path, &[]).await;
        assert_eq!(status, 404, "{path} on the public listener: {body}");
    }
}

/// A stream open at SIGTERM ends with the node: it does not hold the
/// graceful stop open.
#[cfg(unix)]
#[tokio::test]
async fn an_open_stream_ends_when_the_node_stops() {
    let (mut s, admin) = server().await;
    let mut live = Live::open(&admin).await;
    live.next().await;
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .is_ok_and(|st| st.success());
    assert!(ok, "kill -TERM");
    // The body's last chunk, then end of stream.
    live.read_until(b"0\r\n\r\n").await;
    let status = s
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the node exits with a live stream open");
    assert!(status.success(), "{status:?}");
}
