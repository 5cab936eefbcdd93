//! SIGHUP reload (PROTOCOL.md §8) from the outside: the real binary, its
//! config file rewritten, `kill -HUP`, and what clients see afterwards.
//! Every wait is on the reload counter of `/metrics` or on a frame, bounded.

mod turn_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use switchboard_stun::Method;
use switchboard_testkit::{Client, WAIT, http_get};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use turn_support::{Conn, TurnClient, error_code, is_success};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A certificate for localhost and its key, as PEM, and the DER a client sees.
struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn pair() -> Pair {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    Pair {
        cert_pem: c.cert.pem(),
        key_pem: c.signing_key.serialize_pem(),
        der: c.cert.der().clone(),
    }
}

/// The server started with `--config`, its stderr kept for the test.
struct Node {
    child: Child,
    ready: Value,
    http: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    async fn start(args: &[&str]) -> Node {
        Self::start_tls_on("127.0.0.1:0", "127.0.0.1:0", args).await
    }

    /// With HTTPS on `https` and TURN over TLS on `turn_tls`.
    async fn start_tls_on(https: &str, turn_tls: &str, args: &[&str]) -> Node {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "--http-listen",
            "127.0.0.1:0",
            "--turn-listen",
            "127.0.0.1:0",
            "--https-listen",
            https,
            "--turn-tls-listen",
            turn_tls,
            "--admin-listen",
            "",
            "--media-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        // The file decides the log level here (the environment would win).
        .env_remove("SWITCHBOARD_LOG__LEVEL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawning switchboard");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut err = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                eprintln!("server: {line}");
                sink.lock().expect("log").push(line);
            }
        });
        let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = out.next_line().await.expect("stdout") {
                if let Some(json) = line.strip_prefix("READY ") {
                    return serde_json::from_str::<Value>(json).expect("READY json");
                }
            }
            panic!("switchboard exited before READY");
        })
        .await
        .expect("READY within 30 s");
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        let http = ready["http"].as_str().expect("http").to_owned();
        Node {
            child,
            ready,
            http,
            log,
        }
    }

    fn addr(&self, name: &str) -> SocketAddr {
        self.ready[name]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("READY has no {name}: {}", self.ready))
    }

    /// `switchboard_reloads_total{result=...}` now.
    async fn reloads(&self, result: &str) -> u64 {
        let (status, body) = http_get(&self.http, "/metrics", &[]).await;
        assert_eq!(status, 200);
        assert!(
            body.contains("# HELP switchboard_reloads_total"),
            "the counter has its help text"
        );
        let prefix = format!("switchboard_reloads_total{{result=\"{result}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Sends SIGHUP and waits until the reload counted as `result`.
    async fn reload(&self, result: &str) {
        let before = self.reloads(result).await;
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.reloads(result).await <= before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {result} reload counted within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The log lines so far.
    fn lines(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// Waits, bounded, for a log line containing `needle`; its index.
    async fn wait_line(&self, needle: &str) -> usize {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(i) = self.lines().iter().position(|l| l.contains(needle)) {
                return i;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line with {needle:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn client_config(trust: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).expect("trust");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// The certificate a new TLS handshake with `addr` presents.
async fn presented(addr: SocketAddr, trust: &CertificateDer<'static>) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    let name = ServerName::try_from("localhost").expect("name");
    match tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(client_config(trust)).connect(name, tcp),
    )
    .await
    .expect("handshake timed out")
    {
        Ok(tls) => {
            let seen = tls.get_ref().1.peer_certificates().expect("a certificate");
            assert_eq!(&seen[0], trust);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

type Wss = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

async fn wss(addr: SocketAddr, trust: &CertificateDer<'static>) -> Wss {
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    let tls = tokio_rustls::TlsConnector::from(client_config(trust))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let (ws, _) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
        .await
        .expect("wss upgrade");
    ws
}

/// The next text frame of `ty` on a raw WebSocket.
async fn wss_recv(ws: &mut Wss, ty: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {ty} frame"))
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = frame {
            let v: Value = serde_json::from_str(t.as_str()).expect("json");
            if v["type"] == ty {
                return v;
            }
        }
    }
}

/// A message each way between two peers of room `r`.
async fn exchange(a: &mut Client, b: &mut Client, n: u64) {
    let (pa, pb) = (a.peer(), b.peer());
    a.send(json!({"type":"message","room":"r","to":pb,"data":{"n":n}}))
        .await;
    assert_eq!(b.recv_type("message").await["data"]["n"], n);
    b.send(json!({"type":"message","room":"r","to":pa,"data":{"n":n}}))
        .await;
    assert_eq!(a.recv_type("message").await["data"]["n"], n);
}

/// Sends a message of about `size` bytes; `ack`, or the error code.
async fn sized(c: &mut Client, size: usize, id: u64) -> String {
    let pad = "x".repeat(size);
    // In a room of its own, so that nobody else has to read it.
    c.send(json!({"type":"message","room":"solo","data":pad,"id":id}))
        .await;
    loop {
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("ack") if v["reply_to"] == id => return "ack".into(),
            Some("error") => return v["code"].as_str().unwrap_or("").to_owned(),
            _ => {}
        }
    }
}

/// The status of a `/ws` upgrade from browser origin `origin`.
async fn upgrade_from(node: &Node, origin: &str) -> u16 {
    let mut req = format!("ws://{}/ws", node.http)
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("Origin", origin.parse().expect("header"));
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("timeout")
    {
        Ok((_ws, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// A TURN client with an allocation on `server`.
async fn allocated(conn: Conn, user: &str, password: &str) -> TurnClient {
    let mut c = TurnClient::new(conn, user, password);
    c.allocate().await.expect("allocation");
    c
}

async fn refreshes(c: &mut TurnClient) {
    let answer = c.ask(Method::REFRESH, |_| {}).await;
    assert!(
        is_success(&answer),
        "the allocation still refreshes: {:?}",
        error_code(&answer)
    );
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-reload-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn write_pair(dir: &Path, cert: &str, key: &str) {
    // Written beside and renamed over, as certbot's deploy hooks do, so
    // that a reader never sees half a file.
    for (name, text) in [("cert.pem", cert), ("key.pem", key)] {
        let tmp = dir.join(format!("{name}.new"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, dir.join(name)).expect("rename");
    }
}

fn config(dir: &Path, body: &str) -> String {
    format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n{body}",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

const OLD_SECRET: &str = "old-rest-secret-0123456789";
const NEW_SECRET: &str = "new-rest-secret-9876543210";

#[tokio::test]
async fn sighup_applies_the_new_config_and_certificate_and_drops_nothing() {
    let dir = temp_dir("all");
    let (a, b) = (pair(), pair());
    write_pair(&dir, &a.cert_pem, &a.key_pem);
    let file = dir.join("switchboard.toml");
    std::fs::write(
        &file,
        config(
            &dir,
            &format!(
                "[turn]\nusers = {{ alice = \"alice-pw\" }}\nrest_secret = \"{OLD_SECRET}\"\n\
                 [auth]\nallowed_origins = [\"https://one.example\"]\n\
                 [limits]\nmax_message_bytes = 65536\n[log]\nlevel = \"warn\"\n"
            ),
        ),
    )
    .expect("config");
    let node = Node::start(&["--config", file.to_str().expect("utf8")]).await;
    let (https, turn_udp, turn_tls) = (
        node.addr("https"),
        node.addr("turn_udp"),
        node.addr("turn_tls"),
    );
    assert_eq!(node.reloads("applied").await, 0);

    // What must survive every reload: a native pair, a WSS peer, and TURN
    // allocations over UDP and over TLS.
    let mut p1 = Client::connect(&format!("ws://{}/ws", node.http)).await;
    let mut p2 = Client::connect(&format!("ws://{}/ws", node.http)).await;
    p1.join("r").await;
    p2.join("r").await;
    p1.join("solo").await;
    let mut secure = wss(https, &a.der).await;
    let secure_peer = wss_recv(&mut secure, "welcome").await["peer"]
        .as_str()
        .expect("peer")
        .to_owned();
    secure
        .send(Message::text(r#"{"type":"join","room":"r"}"#))
        .await
        .expect("join");
    wss_recv(&mut secure, "joined").await;
    exchange(&mut p1, &mut p2, 1).await;
    let mut alice = allocated(Conn::udp(turn_udp).await, "alice", "alice-pw").await;
    let mut alice_tls = allocated(
        Conn::tls(turn_tls, client_config(&a.der)).await,
        "alice",
        "alice-pw",
    )
    .await;

    // Before: the old rules.
    assert_eq!(upgrade_from(&node, "https://one.example").await, 101);
    assert_eq!(upgrade_from(&node, "https://two.example").await, 403);
    assert_eq!(sized(&mut p1, 2000, 10).await, "ack");
    presented(https, &a.der).await.expect("certificate A");

    // The new config and certificate.
    write_pair(&dir, &b.cert_pem, &b.key_pem);
    std::fs::write(
        &file,
        config(
            &dir,
            &format!(
                "[turn]\nusers = {{ bob = \"bob-pw\" }}\nrest_secret = \"{NEW_SECRET}\"\n\
                 [auth]\nallowed_origins = [\"https://two.example\"]\n\
                 [limits]\nmax_message_bytes = 1000\n[log]\nlevel = \"info\"\n\
                 [http]\nidle_timeout_secs = 61\n"
            ),
        ),
    )
    .expect("config");
    node.reload("applied").await;
    let applied_at = node.wait_line("reload: applied for new requests").await;
    let line = &node.lines()[applied_at];
    for key in [
        "turn.users",
        "turn.rest_secret",
        "auth.allowed_origins",
        "limits.max_message_bytes",
        "log.level",
    ] {
        assert!(line.contains(key), "{key} in {line}");
    }
    let restart = node.wait_line("need a restart").await;
    assert!(
        node.lines()[restart].contains("http.idle_timeout_secs"),
        "{}",
        node.lines()[restart]
    );
    node.wait_line("new TLS handshakes use the new certificate")
        .await;

    // Certificates: new handshakes (HTTPS and TURN over TLS) get B; the
    // open WSS and TURN/TLS connections go on.
    presented(https, &b.der)
        .await
        .expect("certificate B on HTTPS");
    presented(turn_tls, &b.der)
        .await
        .expect("certificate B on TURN/TLS");
    assert!(presented(https, &a.der).await.is_err(), "A is gone");
    p1.send(json!({"type":"message","room":"r","to":secure_peer,"data":"over wss"}))
        .await;
    assert_eq!(wss_recv(&mut secure, "message").await["data"], "over wss");
    refreshes(&mut alice_tls).await;

    // Origins, limits, the log level.
    assert_eq!(upgrade_from(&node, "https://two.example").await, 101);
    assert_eq!(upgrade_from(&node, "https://one.example").await, 403);
    assert_eq!(sized(&mut p1, 2000, 11).await, "too_large");
    assert_eq!(sized(&mut p1, 500, 12).await, "ack");
    let connected = node.wait_line("connected").await;
    assert!(
        connected > applied_at,
        "no `connected` (info) line before the reload, one after it"
    );

    // TURN: bob is in, alice is out for new allocations, her own
    // allocation is not dropped; credentials are minted with the new secret
    // and the old secret's are refused.
    let mut bob = allocated(Conn::udp(turn_udp).await, "bob", "bob-pw").await;
    refreshes(&mut bob).await;
    let mut again = TurnClient::new(Conn::udp(turn_udp).await, "alice", "alice-pw");
    assert_eq!(again.allocate().await, Err(401));
    refreshes(&mut alice).await;
    let (status, body) = http_get(&node.http, "/api/ice-servers", &[]).await;
    assert_eq!(status, 200, "{body}");
    let ice: Value = serde_json::from_str(&body).expect("json");
    let username = ice["ice_servers"][0]["username"]
        .as_str()
        .expect("username");
    let credential = ice["ice_servers"][0]["credential"]
        .as_str()
        .expect("credential");
    let (expiry, id) = username.split_once(':').expect("expiry:id");
    let expiry: u64 = expiry.parse().expect("expiry");
    let (_, by_new) =
        switchboard_turn::auth::mint_rest_credential(NEW_SECRET.as_bytes(), expiry, id);
    assert_eq!(credential, by_new, "minted with the new secret");
    let (old_user, by_old) =
        switchboard_turn::auth::mint_rest_credential(OLD_SECRET.as_bytes(), expiry, id);
    let mut rest = TurnClient::new(Conn::udp(turn_udp).await, username, credential);
    assert!(rest.allocate().await.is_ok());
    let mut stale = TurnClient::new(Conn::udp(turn_udp).await, &old_user, &by_old);
    assert_eq!(stale.allocate().await, Err(401));
    exchange(&mut p1, &mut p2, 2).await;

    // A file that is not TOML: refused, everything stays.
    let good = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, "this is [not toml").expect("write");
    node.reload("refused").await;
    node.wait_line("reload refused").await;
    assert_eq!(sized(&mut p1, 2000, 13).await, "too_large");
    assert_eq!(upgrade_from(&node, "https://two.example").await, 101);
    refreshes(&mut alice).await;
    exchange(&mut p1, &mut p2, 3).await;

    // Valid TOML with a value that does not validate (a JWT secret too
    // short to be safe) beside a limit: the limit is not applied either,
    // and the server stays open without tokens.
    std::fs::write(
        &file,
        good.replace("max_message_bytes = 1000", "max_message_bytes = 5000")
            .replace("[auth]\n", "[auth]\njwt_secret = \"short\"\n"),
    )
    .expect("write");
    assert!(
        std::fs::read_to_string(&file)
            .expect("read")
            .contains("jwt_secret = \"short\"")
    );
    node.reload("refused").await;
    assert_eq!(sized(&mut p1, 2000, 14).await, "too_large");
    let (status, _) = http_get(&node.http, "/api/ice-servers", &[]).await;
    assert_eq!(
        status, 200,
        "no token needed: the refused secret is not in force"
    );
    exchange(&mut p1, &mut p2, 4).await;

    // A certificate whose key is not its own: refused, B stays.
    std::fs::write(&file, &good).expect("write");
    write_pair(&dir, &a.cert_pem, &b.key_pem);
    node.reload("refused").await;
    presented(https, &b.der).await.expect("still B");
    assert_eq!(node.reloads("applied").await, 1);

    // Nothing was dropped along the way.
    exchange(&mut p1, &mut p2, 5).await;
    p2.send(json!({"type":"message","room":"r","to":secure_peer,"data":"still"}))
        .await;
    assert_eq!(wss_recv(&mut secure, "message").await["data"], "still");
    refreshes(&mut alice).await;
    refreshes(&mut alice_tls).await;
    refreshes(&mut bob).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_a_config_file_sighup_reads_the_certificate_files_only() {
    let dir = temp_dir("nofile");
    let (a, b) = (pair(), pair());
    write_pair(&dir, &a.cert_pem, &a.key_pem);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let node = Node::start(&[
        "--tls-cert",
        cert.to_str().expect("utf8"),
        "--tls-key",
        key.to_str().expect("utf8"),
        "--log-level",
        "info",
    ])
    .await;
    let https = node.addr("https");
    let mut p1 = Client::connect(&format!("ws://{}/ws", node.http)).await;
    let mut p2 = Client::connect(&format!("ws://{}/ws", node.http)).await;
    p1.join("r").await;
    p2.join("r").await;
    presented(https, &a.der).await.expect("A");

    write_pair(&dir, &b.cert_pem, &b.key_pem);
    node.reload("applied").await;
    node.wait_line("no config file").await;
    presented(https, &b.der).await.expect("B");
    exchange(&mut p1, &mut p2, 1).await;

    // A pair that does not load is refused and B stays.
    std::fs::write(&key, "not a key").expect("write");
    node.reload("refused").await;
    presented(https, &b.der).await.expect("still B");
    exchange(&mut p1, &mut p2, 2).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ice_servers` credentials from `/api/ice-servers`.
async fn minted(node: &Node) -> (String, String) {
    let (status, body) = http_get(&node.http, "/api/ice-servers", &[]).await;
    assert_eq!(status, 200, "{body}");
    let ice: Value = serde_json::from_str(&body).expect("json");
    let s = &ice["ice_servers"][0];
    (
        s["username"].as_str().expect("username").to_owned(),
        s["credential"].as_str().expect("credential").to_owned(),
    )
}

#[tokio::test]
async fn a_file_without_a_rest_secret_keeps_the_random_one_across_reloads() {
    let dir = temp_dir("secret");
    let a = pair();
    write_pair(&dir, &a.cert_pem, &a.key_pem);
    let file = dir.join("switchboard.toml");
    std::fs::write(&file, config(&dir, "[rooms]\nmax_peers = 4\n")).expect("config");
    let node = Node::start(&["--config", file.to_str().expect("utf8")]).await;
    let turn_udp = node.addr("turn_udp");
    let (user1, pass1) = minted(&node).await;
    let mut before = allocated(Conn::udp(turn_udp).await, &user1, &pass1).await;

    std::fs::write(&file, config(&dir, "[rooms]\nmax_peers = 5\n")).expect("config");
    node.reload("applied").await;
    // TURN and the minter still agree, on the same random secret: a
    // credential from before and one from after both allocate.
    let (user2, pass2) = minted(&node).await;
    allocated(Conn::udp(turn_udp).await, &user2, &pass2).await;
    allocated(Conn::udp(turn_udp).await, &user1, &pass1).await;
    refreshes(&mut before).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A free TCP port of 127.0.0.1 now (the one TLS port needs a port that
/// both keys name, so not 0).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test]
async fn the_one_tls_port_takes_the_new_certificate_for_https_and_turn() {
    let dir = temp_dir("oneport");
    let (a, b) = (pair(), pair());
    write_pair(&dir, &a.cert_pem, &a.key_pem);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let addr = format!("127.0.0.1:{}", free_port());
    let node = Node::start_tls_on(
        &addr,
        &addr,
        &[
            "--tls-cert",
            cert.to_str().expect("utf8"),
            "--tls-key",
            key.to_str().expect("utf8"),
        ],
    )
    .await;
    let port: SocketAddr = addr.parse().expect("addr");
    assert_eq!(node.addr("https"), port);
    assert_eq!(node.addr("turn_tls"), port);
    let mut secure = wss(port, &a.der).await;
    wss_recv(&mut secure, "welcome").await;
    let (user, pass) = minted(&node).await;
    let mut over_tls = allocated(Conn::tls(port, client_config(&a.der)).await, &user, &pass).await;

    write_pair(&dir, &b.cert_pem, &b.key_pem);
    node.reload("applied").await;
    presented(port, &b.der).await.expect("B on the shared port");
    let mut fresh = allocated(Conn::tls(port, client_config(&b.der)).await, &user, &pass).await;
    refreshes(&mut fresh).await;
    // The connections of before are still served.
    refreshes(&mut over_tls).await;
    secure
        .send(Message::text(r#"{"type":"ping","id":1}"#))
        .await
        .expect("send");
    wss_recv(&mut secure, "pong").await;
    let _ = std::fs::remove_dir_all(&dir);
}
