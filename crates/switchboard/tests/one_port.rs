//! One TLS port for HTTPS/WSS and TURN over TLS (PROTOCOL.md §8): the
//! binary with `http.tls_listen` = `turn.tls_listen`, and every kind of
//! client on that one port.

mod turn_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use switchboard_stun::attr::XorMappedAddress;
use switchboard_stun::{Class, Message, Method};
use switchboard_testkit::{Server, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use turn_support::{Conn, TurnClient, error_code, is_success};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
/// `http.header_timeout_secs` and `http.tls_handshake_timeout_secs` here.
const SHORT_SECS: u64 = 2;

struct OnePort {
    /// The process, killed on drop.
    server: Server,
    addr: String,
    ca: CertificateDer<'static>,
    dir: std::path::PathBuf,
}

impl Drop for OnePort {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port of 127.0.0.1 right now: both listeners are configured
/// with it, since port 0 would mean two ports.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn config_file(dir: &std::path::Path, addr: &str, tls: Option<(&str, &str)>) -> String {
    let tls = match tls {
        Some((cert, key)) => format!("[tls]\ncert = {cert:?}\nkey = {key:?}\n"),
        None => String::new(),
    };
    let text = format!(
        "[http]\ntls_listen = \"{addr}\"\nheader_timeout_secs = {SHORT_SECS}\n\
         tls_handshake_timeout_secs = {SHORT_SECS}\n\
         [admin]\nlisten = \"\"\n{tls}\
         [turn]\ntls_listen = \"{addr}\"\nallowed_peer_ranges = [\"127.0.0.0/8\"]\n\
         [turn.users]\nalice = \"alice-pw\"\n"
    );
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf8").to_string()
}

async fn start() -> OnePort {
    start_with(&[]).await
}

async fn start_with(env: &[(&str, &str)]) -> OnePort {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let dir = std::env::temp_dir().join(format!(
        "sb-one-port-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = config_file(
        &dir,
        &addr,
        Some((
            cert_path.to_str().expect("utf8"),
            key_path.to_str().expect("utf8"),
        )),
    );
    let server = Server::start(BIN, env, &["--config", &config]).await;
    assert_eq!(server.ready["https"], addr.as_str(), "{}", server.ready);
    assert_eq!(server.ready["turn_tls"], addr.as_str(), "{}", server.ready);
    OnePort {
        server,
        addr,
        ca: cert.cert.der().clone(),
        dir,
    }
}

fn client_config(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("trust the test certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

impl OnePort {
    async fn tls(&self, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(&self.addr).await.expect("tcp connect");
        let name = ServerName::try_from("localhost").expect("name");
        tokio::time::timeout(
            WAIT,
            tokio_rustls::TlsConnector::from(client_config(&self.ca, alpn)).connect(name, tcp),
        )
        .await
        .expect("handshake timed out")
        .expect("TLS handshake")
    }

    async fn healthz(&self, alpn: &[&[u8]]) -> String {
        let mut tls = self.tls(alpn).await;
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut resp = Vec::new();
        tokio::time::timeout(WAIT, tls.read_to_end(&mut resp))
            .await
            .expect("read timed out")
            .ok();
        String::from_utf8_lossy(&resp).into_owned()
    }

    async fn wss(&self) -> WebSocketStream<TlsStream<TcpStream>> {
        let tls = self.tls(&[]).await;
        let (ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::client_async("wss://localhost/ws", tls),
        )
        .await
        .expect("upgrade timed out")
        .expect("wss upgrade");
        ws
    }
}

async fn next_json(ws: &mut WebSocketStream<TlsStream<TcpStream>>) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("a frame")
            .expect("no error");
        if let WsMessage::Text(text) = frame {
            return serde_json::from_str(text.as_str()).expect("json");
        }
    }
}

async fn next_of_type(ws: &mut WebSocketStream<TlsStream<TcpStream>>, ty: &str) -> Value {
    for _ in 0..20 {
        let v = next_json(ws).await;
        if v["type"] == ty {
            return v;
        }
    }
    panic!("no {ty} frame");
}

async fn send_json(ws: &mut WebSocketStream<TlsStream<TcpStream>>, v: Value) {
    ws.send(WsMessage::text(v.to_string())).await.expect("send");
}

/// Waits for the server to end the stream: `Ok(bytes read)` on a close,
/// `Err` if still open after `limit`.
async fn closed_within<S: AsyncReadExt + Unpin>(s: &mut S, limit: Duration) -> Result<Vec<u8>, ()> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut all = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Err(()),
            Ok(Ok(0) | Err(_)) => return Ok(all),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn stun_turn_https_and_wss_share_one_tls_port() {
    let p = start().await;

    // A STUN Binding over TLS, no ALPN: its first bytes make it TURN's.
    let tls = p.tls(&[]).await;
    let local = tls.get_ref().0.local_addr().expect("local addr");
    let mut stun = TurnClient::new(Conn::Tls(Box::new(tls), Vec::new()), "alice", "alice-pw");
    let answer = stun.request(Method::BINDING, false, |_| {}).await;
    let msg = Message::parse(&answer).expect("a STUN answer");
    assert_eq!(msg.class(), Class::SuccessResponse);
    assert_eq!(
        msg.get::<XorMappedAddress>()
            .expect("attr")
            .expect("present")
            .0,
        local,
        "XOR-MAPPED-ADDRESS is the client's own address"
    );

    // A TURN allocation over TLS: 401 first, then success with credentials,
    // and the relay carries data to a peer.
    let mut turn = TurnClient::new(
        Conn::Tls(Box::new(p.tls(&[]).await), Vec::new()),
        "alice",
        "alice-pw",
    );
    let unsigned = turn
        .request(Method::ALLOCATE, false, |b| {
            b.add(&switchboard_stun::attr::RequestedTransport::UDP);
        })
        .await;
    assert_eq!(error_code(&unsigned), Some(401));
    let relayed = turn.allocate().await.expect("allocated over TLS");
    let peer = turn_support::peer().await;
    let peer_addr = peer.local_addr().expect("peer addr");
    let ok = turn
        .ask(Method::CREATE_PERMISSION, |b| {
            b.add_xor_peer_address(peer_addr);
        })
        .await;
    assert!(is_success(&ok), "permission: {:?}", error_code(&ok));
    turn.send_indication(peer_addr, b"over one port").await;
    let (data, from) = turn_support::peer_recv(&peer).await.expect("relayed data");
    assert_eq!((data.as_slice(), from), (&b"over one port"[..], relayed));

    // HTTPS, without ALPN and with a browser's offer.
    let plain = p.healthz(&[]).await;
    assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");
    let browser = p.healthz(&[b"h2", b"http/1.1"]).await;
    assert!(browser.starts_with("HTTP/1.1 200"), "{browser}");

    // WSS: welcome, and two native clients meet in a room.
    let mut a = p.wss().await;
    let welcome = next_json(&mut a).await;
    assert_eq!(welcome["type"], "welcome");
    let port = p.addr.rsplit(':').next().expect("port");
    assert!(
        welcome["ice_servers"]
            .to_string()
            .contains(&format!("turns:localhost:{port}?")),
        "turns: on the one port: {welcome}"
    );
    let a_peer = welcome["peer"].as_str().expect("peer").to_string();
    send_json(&mut a, json!({"type": "join", "room": "one-port"})).await;
    next_of_type(&mut a, "joined").await;
    let mut b = p.wss().await;
    assert_eq!(next_json(&mut b).await["type"], "welcome");
    send_json(&mut b, json!({"type": "join", "room": "one-port"})).await;
    let joined = next_of_type(&mut b, "joined").await;
    assert_eq!(joined["peers"][0]["peer"], a_peer.as_str(), "{joined}");
    next_of_type(&mut a, "other_joined").await;

    // The allocation and the sessions outlive each other's traffic.
    turn.send_indication(peer_addr, b"still relaying").await;
    let (data, _) = turn_support::peer_recv(&peer).await.expect("relayed data");
    assert_eq!(data, b"still relaying");
    send_json(
        &mut a,
        json!({"type": "message", "room": "one-port", "data": {"hi": 1}}),
    )
    .await;
    let m = next_of_type(&mut b, "message").await;
    assert_eq!(m["data"]["hi"], 1);
}

#[tokio::test]
async fn alpn_routes_without_waiting_for_bytes() {
    let p = start().await;
    // stun.turn (RFC 7443): TURN's from the handshake on.
    let tls = p.tls(&[b"stun.turn"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"stun.turn"[..]));
    let mut stun = TurnClient::new(Conn::Tls(Box::new(tls), Vec::new()), "alice", "alice-pw");
    let answer = stun.request(Method::BINDING, false, |_| {}).await;
    assert!(is_success(&answer));

    let tls = p.tls(&[b"stun.nat-discovery"]).await;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"stun.nat-discovery"[..])
    );

    // A browser's offer gets http/1.1 (never h2: HTTP/1.1 is served).
    let tls = p.tls(&[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    // h2 alone: not refused, told no ALPN, and HTTP's without a byte read.
    let mut tls = p.tls(&[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let reply = closed_within(&mut tls, WAIT)
        .await
        .expect("answered and closed");
    assert!(reply.starts_with(b"HTTP/1.1 200"));

    // An offer of something else is not refused: no ALPN, bytes decide.
    let tls = p.tls(&[b"acme-tls/1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
}

#[tokio::test]
async fn silent_and_garbage_clients_are_closed_and_harm_no_one() {
    let p = start().await;
    let mut ws = p.wss().await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    let mut turn = TurnClient::new(
        Conn::Tls(Box::new(p.tls(&[]).await), Vec::new()),
        "alice",
        "alice-pw",
    );
    turn.allocate().await.expect("allocated");

    // Silent after the handshake: closed after the header timeout.
    let bound = Duration::from_secs(SHORT_SECS);
    let mut silent = p.tls(&[]).await;
    let started = Instant::now();
    let got = closed_within(&mut silent, bound + Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    assert!(got.is_ok(), "a silent client still open after {elapsed:?}");
    assert!(
        elapsed >= bound - Duration::from_millis(500),
        "closed too early: {elapsed:?}"
    );
    // Silent before the handshake too.
    let mut raw = TcpStream::connect(&p.addr).await.expect("connect");
    let started = Instant::now();
    assert!(
        closed_within(&mut raw, bound + Duration::from_secs(3))
            .await
            .is_ok(),
        "no hello, still open after {:?}",
        started.elapsed()
    );

    // Neither STUN nor HTTP: HTTP's 400, then closed.
    let mut garbage = p.tls(&[]).await;
    garbage
        .write_all(b"\x01\x02\x03\x04 not a protocol\r\n\r\n")
        .await
        .expect("write");
    let reply = closed_within(&mut garbage, WAIT).await.expect("closed");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    // STUN first, then bytes that frame as nothing: TURN closes it.
    let mut bad_stun = p.tls(&[]).await;
    let mut bytes = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    bytes.extend_from_slice(&[7; 12]);
    bytes.extend_from_slice(&[0xFF; 4]);
    bad_stun.write_all(&bytes).await.expect("write");
    assert!(closed_within(&mut bad_stun, WAIT).await.is_ok());
    // And a byte stream that stops mid-STUN-header is closed at the bound.
    let mut half = p.tls(&[]).await;
    half.write_all(&[0x00, 0x01, 0x00]).await.expect("write");
    assert!(
        closed_within(&mut half, bound + Duration::from_secs(3))
            .await
            .is_ok()
    );

    // The others are untouched.
    send_json(&mut ws, json!({"type": "ping", "id": 1})).await;
    assert_eq!(next_of_type(&mut ws, "pong").await["reply_to"], 1);
    let refresh = turn
        .ask(Method::REFRESH, |b| {
            b.add(&switchboard_stun::attr::Lifetime(600));
        })
        .await;
    assert!(is_success(&refresh), "{:?}", error_code(&refresh));
    let ok = p.healthz(&[]).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

/// Once it is TURN's, a connection no longer holds an HTTP slot: with two
/// HTTP connections allowed per address, four TURN clients and an HTTPS
/// request from the same one are all served.
#[tokio::test]
async fn turn_connections_leave_the_http_caps() {
    let p = start_with(&[("SWITCHBOARD_LIMITS__MAX_CONNECTIONS_PER_IP", "2")]).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut c = TurnClient::new(
            Conn::Tls(Box::new(p.tls(&[]).await), Vec::new()),
            "alice",
            "alice-pw",
        );
        let answer = c.request(Method::BINDING, false, |_| {}).await;
        assert!(is_success(&answer));
        clients.push(c);
    }
    let ok = p.healthz(&[]).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // And the clients are all still served.
    for c in &mut clients {
        let answer = c.request(Method::BINDING, false, |_| {}).await;
        assert!(is_success(&answer));
    }
}

/// SIGTERM with TURN and WSS clients open on the one port: the WSS client
/// gets its 1001, the TURN connections are closed, and the process exits
/// within its shutdown bound.
#[cfg(unix)]
#[tokio::test]
async fn sigterm_closes_both_kinds_and_exits() {
    let mut p = start().await;
    let mut turn = TurnClient::new(
        Conn::Tls(Box::new(p.tls(&[]).await), Vec::new()),
        "alice",
        "alice-pw",
    );
    turn.allocate().await.expect("allocated");
    let mut ws = p.wss().await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &p.server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closed in time");
        match frame {
            Some(Ok(WsMessage::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => break None,
        }
    };
    assert_eq!(code, Some(1001));
    // `recv` gives up after turn_support's WAIT: well before it, closed.
    let waiting = Instant::now();
    assert!(turn.conn.recv().await.is_none(), "nothing but a close");
    assert!(
        waiting.elapsed() < turn_support::WAIT - Duration::from_secs(1),
        "the TURN connection was not closed"
    );
    let exit = p
        .server
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exited in time");
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test]
async fn one_port_without_a_certificate_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("sb-one-port-nocert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = config_file(&dir, "127.0.0.1:5443", None);
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(BIN)
            .args(["--config", &config, "--http-listen", "127.0.0.1:0"])
            .env("SWITCHBOARD_LOG__LEVEL", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("exits in time")
    .expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "started without a certificate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("one TLS port") && stderr.contains("tls.cert"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("READY"));
}

/// coturn's own client relays through the one port with `-S` (TLS).
#[tokio::test]
async fn coturn_uclient_over_the_one_port() {
    const UCLIENT: &str = "/usr/bin/turnutils_uclient";
    const PEER: &str = "/usr/bin/turnutils_peer";
    if !std::path::Path::new(UCLIENT).is_file() || !std::path::Path::new(PEER).is_file() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "coturn missing in CI: apt-get install -y coturn"
        );
        eprintln!("\n*** SKIPPING: coturn's turnutils not installed ***\n");
        return;
    }
    let p = start().await;
    let peer_port = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe");
        probe.local_addr().expect("addr").port()
    };
    let _peer = tokio::process::Command::new(PEER)
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("turnutils_peer starts");
    // Until the peer echoes.
    let probe = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut up = false;
    for _ in 0..100 {
        probe
            .send_to(b"ping", ("127.0.0.1", peer_port))
            .await
            .expect("send");
        let mut buf = [0u8; 16];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(50), probe.recv_from(&mut buf)).await
        {
            up = true;
            break;
        }
    }
    assert!(up, "turnutils_peer did not come up");
    let port = p.addr.rsplit(':').next().expect("port").to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(UCLIENT)
            .args([
                "-n", "50", "-m", "2", "-l", "180", "-z", "5", "-c", "-t", "-S",
            ])
            .args(["-u", "alice", "-w", "alice-pw", "-p", &port])
            .args(["-e", "127.0.0.1", "-r", &peer_port.to_string(), "127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("uclient finishes in time")
    .expect("uclient runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let totals = text
        .lines()
        .rev()
        .find_map(|l| l.split("start_mclient: tot_send_msgs=").nth(1))
        .unwrap_or_default()
        .to_string();
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    assert_eq!(
        totals.trim(),
        "100, tot_recv_msgs=100",
        "uclient over the one port, last lines reversed:\n{}",
        tail.join("\n")
    );
}
