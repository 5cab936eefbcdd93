//! The HTTP listener's own limits, over real sockets: header and idle
//! timeouts, and the connection caps applied at accept.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_testkit::{Client, Server, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

async fn connect_from(source: &str, server: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("source address"))
        .expect("bind the source address");
    tokio::time::timeout(WAIT, socket.connect(server.parse().expect("addr")))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Reads until the server closes; returns what it sent. Fails the test
/// if it stays open for `limit`.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
            Ok(Ok(0) | Err(_)) => return all,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// One keep-alive GET on an open connection; the status code.
async fn get_on(s: &mut TcpStream, path: &str) -> Option<u16> {
    get_body_on(s, path).await.map(|(status, _)| status)
}

/// One keep-alive GET on an open connection; the status code and body.
async fn get_body_on(s: &mut TcpStream, path: &str) -> Option<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // The head, byte by byte (short), then the body by its length.
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut byte))
            .await
            .expect("response timed out")
            .ok()?;
        if n == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tokio::time::timeout(WAIT, s.read_exact(&mut body))
        .await
        .expect("body timed out")
        .ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn half_a_request_line_is_closed_within_the_header_timeout() {
    let s = Server::start(BIN, &[("SWITCHBOARD_HTTP__HEADER_TIMEOUT_SECS", "1")], &[]).await;
    let mut slow = TcpStream::connect(&s.http).await.expect("connect");
    let mut silent = TcpStream::connect(&s.http).await.expect("connect");
    slow.write_all(b"GET /healthz HT").await.expect("write");
    let start = Instant::now();
    read_until_closed(&mut slow, Duration::from_secs(5)).await;
    read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "not closed before the timeout"
    );
    // The server itself is fine.
    let (status, _) = switchboard_testkit::http_get(&s.http, "/healthz", &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_stalled_request_body_is_closed_within_the_idle_timeout() {
    let s = Server::start(
        BIN,
        &[
            ("SWITCHBOARD_HTTP__HEADER_TIMEOUT_SECS", "30"),
            ("SWITCHBOARD_HTTP__IDLE_TIMEOUT_SECS", "1"),
        ],
        &[],
    )
    .await;
    let mut c = TcpStream::connect(&s.http).await.expect("connect");
    // An Engine.IO polling session, whose POSTs the server reads in full.
    let (status, open) = get_body_on(&mut c, "/socket.io/?EIO=4&transport=polling")
        .await
        .expect("handshake");
    assert_eq!(status, 200, "{open}");
    let open: serde_json::Value =
        serde_json::from_str(open.strip_prefix('0').expect("an open packet")).expect("json");
    let sid = open["sid"].as_str().expect("sid");
    // The head is complete, the promised body never comes.
    let post = format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: t\r\n\
         Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\n40"
    );
    c.write_all(post.as_bytes()).await.expect("write");
    read_until_closed(&mut c, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn connections_beyond_the_cap_per_source_are_refused_while_others_are_served() {
    let s = Server::start(
        BIN,
        &[
            ("SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_IP", "3"),
            ("SWITCHBOARD_HTTP__HEADER_TIMEOUT_SECS", "60"),
        ],
        &[],
    )
    .await;
    // Three slots from 127.0.0.1: two kept-alive HTTP connections and a
    // WebSocket (an upgraded connection keeps its slot).
    let mut first = connect_from("127.0.0.1", &s.http).await;
    assert_eq!(get_on(&mut first, "/healthz").await, Some(200));
    let mut second = connect_from("127.0.0.1", &s.http).await;
    assert_eq!(get_on(&mut second, "/healthz").await, Some(200));
    let mut ws = Client::connect(&s.ws_url("")).await;

    // The fourth is closed at accept, answered at most with a 503.
    let mut fourth = connect_from("127.0.0.1", &s.http).await;
    let _ = fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let answer = read_until_closed(&mut fourth, WAIT).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "refused: {answer:?}"
    );

    // Another source is served, and the three keep working.
    let mut other = connect_from("127.0.0.2", &s.http).await;
    assert_eq!(get_on(&mut other, "/healthz").await, Some(200));
    assert_eq!(get_on(&mut first, "/healthz").await, Some(200));
    let ack = ws.request(json!({"type": "join", "room": "r"}), 1).await;
    assert_eq!(ack["type"], "joined");

    // A slot freed is a slot usable again (once the server has seen the
    // close: bounded retries).
    drop(second);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = connect_from("127.0.0.1", &s.http).await;
        if get_on(&mut again, "/healthz").await == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn established_websockets_outlive_the_header_and_idle_timeouts() {
    let s = Server::start(
        BIN,
        &[
            ("SWITCHBOARD_HTTP__HEADER_TIMEOUT_SECS", "1"),
            ("SWITCHBOARD_HTTP__IDLE_TIMEOUT_SECS", "1"),
        ],
        &[],
    )
    .await;
    let mut a = Client::connect(&s.ws_url("")).await;
    let mut b = Client::connect(&s.ws_url("")).await;
    a.join("r").await;
    b.join("r").await;
    a.recv_type("other_joined").await;
    // Well past both timeouts with no traffic at all (heartbeats are 15 s
    // apart by default).
    a.expect_silence(Duration::from_secs(3)).await;
    let ack = b
        .request(json!({"type":"message","room":"r","data":{"x":1}}), 2)
        .await;
    assert_eq!(ack["delivered"], 1);
    assert_eq!(a.recv_type("message").await["data"], json!({"x":1}));
}

#[tokio::test]
async fn the_open_file_limit_is_raised_to_the_hard_limit() {
    use tokio::io::AsyncBufReadExt;
    fn nofile(pid: u32) -> (String, String) {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Max open files")
            .to_string();
        let mut f = line["Max open files".len()..].split_whitespace();
        let soft = f.next().expect("soft").to_string();
        (soft, f.next().expect("hard").to_string())
    }
    let (_, hard) = nofile(std::process::id());
    if hard.parse::<u64>().is_ok_and(|h| h <= 256) {
        eprintln!("skipped: the hard open-file limit ({hard}) leaves nothing to raise");
        return;
    }
    // The shell lowers the soft limit the server starts with.
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" --http-listen 127.0.0.1:0 --turn-listen 127.0.0.1:0 --media-listen 127.0.0.1:0")
        .arg(BIN)
        .env("SWITCHBOARD_LOG__LEVEL", "error")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.starts_with("READY ") {
                return;
            }
        }
        panic!("exited before READY");
    })
    .await
    .expect("READY within 30 s");
    let pid = child.id().expect("running");
    let (soft, hard_now) = nofile(pid);
    assert_eq!(soft, hard_now, "the soft limit is raised to the hard one");
}
