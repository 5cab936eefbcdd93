//! PROTOCOL.md §2 at the packet level: Engine.IO v4 / Socket.IO v5 over a
//! real WebSocket to a real switchboard process, spoken by hand so that
//! `cargo test` covers the face without node (interop/socketio runs the
//! real socket.io-client).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_testkit::{Client, Server, WAIT};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A Socket.IO client on the WebSocket transport, namespace `/`.
struct Sio {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Sio {
    /// Opens the Engine.IO session and connects to `/` with `auth`; returns
    /// the client, or the CONNECT_ERROR payload when refused.
    async fn connect(server: &Server, auth: Option<Value>) -> Result<Sio, Value> {
        let mut sio = Sio::open(server).await.expect("websocket upgrade");
        let connect = match auth {
            Some(auth) => format!("40{auth}"),
            None => "40".to_string(),
        };
        sio.send(&connect).await;
        let reply = sio.packet().await;
        if let Some(body) = reply.strip_prefix("44") {
            return Err(serde_json::from_str(body).expect("CONNECT_ERROR json"));
        }
        assert!(reply.starts_with("40"), "Socket.IO CONNECT, got {reply}");
        Ok(sio)
    }

    /// Opens an Engine.IO session only (no Socket.IO CONNECT); the
    /// handshake's HTTP refusal as an error.
    async fn open(server: &Server) -> Result<Sio, tokio_tungstenite::tungstenite::Error> {
        let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.http);
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")?;
        let mut sio = Sio { ws };
        let open = sio.packet().await;
        assert!(open.starts_with('0'), "Engine.IO OPEN first, got {open}");
        Ok(sio)
    }

    /// Reads (answering pings) until the server ends the connection;
    /// returns every packet read, or None when it is still open after `limit`.
    async fn until_closed(&mut self, limit: Duration) -> Option<Vec<String>> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None | Some(Err(_))) => return Some(seen),
                Ok(Some(Ok(msg))) => msg,
            };
            match msg {
                Message::Text(t) if t.as_str() == "2" => {
                    let _ = self.ws.send(Message::text("3")).await;
                }
                Message::Text(t) => seen.push(t.as_str().to_string()),
                Message::Close(_) => return Some(seen),
                _ => {}
            }
        }
    }

    async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }

    /// `42[event, args..]`, or `42<id>[..]` to ask for an ack.
    async fn emit(&mut self, event: &str, args: &[Value], ack: Option<u32>) {
        let mut packet = vec![json!(event)];
        packet.extend_from_slice(args);
        let id = ack.map(|i| i.to_string()).unwrap_or_default();
        self.send(&format!("42{id}{}", Value::Array(packet))).await;
    }

    /// The next Engine.IO message packet's text, answering pings.
    async fn packet(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a packet in time")
                .expect("stream open")
                .expect("read");
            let Message::Text(text) = msg else { continue };
            if text.as_str() == "2" {
                self.send("3").await;
                continue;
            }
            return text.as_str().to_string();
        }
    }

    /// The next event: (name, args).
    async fn event(&mut self) -> (String, Vec<Value>) {
        let p = self.packet().await;
        let body = p
            .strip_prefix("42")
            .unwrap_or_else(|| panic!("an EVENT, got {p}"));
        let mut all: Vec<Value> = serde_json::from_str(body).expect("event json");
        let name = all.remove(0);
        (name.as_str().expect("event name").to_string(), all)
    }

    /// The next event named `name`, skipping others.
    async fn expect(&mut self, name: &str) -> Vec<Value> {
        for _ in 0..32 {
            let (n, args) = self.event().await;
            if n == name {
                return args;
            }
        }
        panic!("no {name} within 32 events");
    }

    /// The ack with `id`: `43<id>[payload]`.
    async fn ack(&mut self, id: u32) -> Value {
        for _ in 0..32 {
            let p = self.packet().await;
            if let Some(body) = p.strip_prefix(&format!("43{id}")) {
                let mut args: Vec<Value> = serde_json::from_str(body).expect("ack json");
                return args.remove(0);
            }
        }
        panic!("no ack {id} within 32 packets");
    }
}

#[tokio::test]
async fn join_message_with_ack_leave_and_disconnect() {
    let s = Server::start(BIN, &[("SWITCHBOARD_ROOMS__MAX_PEERS", "2")], &[]).await;
    let mut a = Sio::connect(&s, None).await.expect("a connects");
    let mut b = Sio::connect(&s, None).await.expect("b connects");
    let mut c = Sio::connect(&s, None).await.expect("c connects");

    a.emit("join", &[json!("r")], None).await;
    let joined = a.expect("joined").await;
    assert_eq!(joined[0], "r");
    let id_a = joined[1].as_str().expect("peer id").to_string();

    b.emit("join", &[json!("r")], None).await;
    let id_b = b.expect("joined").await[1].clone();
    assert_eq!(a.expect("otherjoin").await, vec![json!("r"), id_b.clone()]);

    c.emit("join", &[json!("r")], None).await;
    assert_eq!(c.expect("full").await[0], "r");

    let offer = json!({"kind": "offer", "sdp": "v=0"});
    a.emit("message", &[json!("r"), offer.clone()], Some(7))
        .await;
    assert_eq!(a.ack(7).await, json!({"delivered": 1}));
    assert_eq!(b.expect("message").await, vec![json!("r"), offer]);

    c.emit("message", &[json!("r"), json!("hi")], Some(1)).await;
    let refused = c.ack(1).await;
    assert_eq!(refused["code"], "not_in_room");
    assert_eq!(refused["delivered"], 0);

    b.emit("leave", &[json!("r")], None).await;
    assert_eq!(b.expect("leaved").await, vec![json!("r"), id_b.clone()]);
    assert_eq!(a.expect("bye").await, vec![json!("r"), id_b]);

    c.emit("join", &[json!("r")], None).await;
    c.expect("joined").await;
    a.expect("otherjoin").await;
    // Engine.IO CLOSE: the others get bye at once.
    a.send("1").await;
    assert_eq!(c.expect("bye").await, vec![json!("r"), json!(id_a)]);
}

#[tokio::test]
async fn a_native_peer_and_a_socketio_peer_share_a_room() {
    let s = Server::start(BIN, &[], &[]).await;
    let mut native = Client::connect(&s.ws_url("")).await;
    let mut sio = Sio::connect(&s, None).await.expect("connects");
    native.join("mixed").await;
    sio.emit("join", &[json!("mixed")], None).await;
    let id = sio.expect("joined").await[1].clone();
    let other = native.recv_type("other_joined").await;
    assert_eq!(other["peer"], id);

    native
        .send(json!({"type":"message","room":"mixed","data":{"kind":"offer","sdp":"x"}}))
        .await;
    assert_eq!(
        sio.expect("message").await,
        vec![json!("mixed"), json!({"kind":"offer","sdp":"x"})]
    );
    sio.emit("message", &[json!("mixed"), json!({"kind":"answer"})], None)
        .await;
    let m = native.recv_type("message").await;
    assert_eq!(m["from"], id);
    assert_eq!(m["data"], json!({"kind":"answer"}));

    drop(sio);
    let bye = native.recv_type("bye").await;
    assert_eq!(bye["peer"], id);
}

#[tokio::test]
async fn a_bad_token_is_refused_at_connect() {
    let s = Server::start(
        BIN,
        &[(
            "SWITCHBOARD_AUTH__JWT_SECRET",
            "a-test-secret-of-32-bytes-or-more",
        )],
        &[],
    )
    .await;
    let missing = Sio::connect(&s, None).await.err().expect("refused");
    assert!(
        missing["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("unauthorized: "))
    );
    let forged = Sio::connect(&s, Some(json!({"token": "e30.e30.AAAA"})))
        .await
        .err()
        .expect("refused");
    assert!(
        forged["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("unauthorized: invalid token"))
    );
}

#[tokio::test]
async fn a_slow_reader_loses_its_place_and_nobody_else_waits() {
    let s = Server::start(
        BIN,
        &[
            ("SWITCHBOARD_SESSION__OUTBOUND_QUEUE_FRAMES", "8"),
            ("SWITCHBOARD_LIMITS__RATE_PER_SEC", "0"),
        ],
        &[],
    )
    .await;
    let mut sender = Client::connect(&s.ws_url("")).await;
    let mut fast = Client::connect(&s.ws_url("")).await;
    let mut slow = Sio::connect(&s, None).await.expect("connects");
    sender.join("r").await;
    fast.join("r").await;
    slow.emit("join", &[json!("r")], None).await;
    let slow_id = slow.expect("joined").await[1].clone();
    sender.recv_type("other_joined").await;
    sender.recv_type("other_joined").await;
    // From here `slow` reads nothing: its socket buffers fill, then its
    // Socket.IO queue, and the hub lets it go.
    let blob = "x".repeat(60_000);
    // Enough to fill the loopback socket buffers and then the queue; the
    // fast reader keeps up the whole time.
    for i in 0..600u64 {
        sender
            .send(json!({"type":"message","room":"r","data":{"i":i,"blob":blob}}))
            .await;
        let m = fast.recv_type("message").await;
        assert_eq!(m["data"]["i"], i);
    }
    let bye = sender.recv_type("bye").await;
    assert_eq!(bye["peer"], slow_id);
    assert_eq!(fast.recv_type("bye").await["peer"], slow_id);
}

/// The ack of the message that a Socket.IO reader's full queue refused
/// counts only the readers that have it (issue #12, item 13), for a native
/// sender and for a Socket.IO sender; before, it counted the refused one
/// too, and only the messages after the `bye` said 1.
#[tokio::test]
async fn the_ack_of_a_message_a_full_socketio_queue_refused_does_not_count_it() {
    let s = Server::start(
        BIN,
        &[
            ("SWITCHBOARD_SESSION__OUTBOUND_QUEUE_FRAMES", "8"),
            ("SWITCHBOARD_LIMITS__RATE_PER_SEC", "0"),
        ],
        &[],
    )
    .await;
    for classic_sender in [false, true] {
        let room = if classic_sender { "b" } else { "a" };
        let mut native = Client::connect(&s.ws_url("")).await;
        let mut fast = Client::connect(&s.ws_url("")).await;
        let mut slow = Sio::connect(&s, None).await.expect("connects");
        let mut sio_sender = Sio::connect(&s, None).await.expect("connects");
        // Only the sender and two readers: a third reader that stopped
        // reading would be one more slow reader.
        if !classic_sender {
            native.join(room).await;
        }
        fast.join(room).await;
        slow.emit("join", &[json!(room)], None).await;
        let slow_id = slow.expect("joined").await[1].clone();
        if classic_sender {
            sio_sender.emit("join", &[json!(room)], None).await;
            sio_sender.expect("joined").await;
        }
        let blob = "x".repeat(60_000);
        // `slow` reads nothing from here: its socket buffers fill, then its
        // Socket.IO queue. Bounded: 600 × 60 KB is far more than both hold.
        let mut acks = Vec::new();
        let mut bye_after = None;
        for i in 0..600u32 {
            let data = json!({"i":i,"blob":blob});
            let delivered = if classic_sender {
                sio_sender
                    .emit("message", &[json!(room), data], Some(i))
                    .await;
                sio_sender.ack(i).await["delivered"].clone()
            } else {
                let ack = native
                    .request(
                        json!({"type":"message","room":room,"data":data}),
                        u64::from(i),
                    )
                    .await;
                ack["delivered"].clone()
            };
            // `fast` sees the `bye` between this message and the next one;
            // it must not see it before the message whose ack left the
            // slow reader out.
            let mut bye_first = false;
            let mut m = Value::Null;
            for _ in 0..8 {
                let f = fast.recv().await;
                match f["type"].as_str() {
                    Some("message") => {
                        m = f;
                        break;
                    }
                    Some("bye") => bye_first = true,
                    _ => {}
                }
            }
            assert_eq!(m["data"]["i"], i);
            assert!(
                !bye_first,
                "the bye came before message {i}, acked {delivered} (Socket.IO sender: {classic_sender})"
            );
            acks.push(delivered);
            if acks.last() != Some(&json!(2)) {
                bye_after = Some(i);
                break;
            }
        }
        let i = bye_after.expect("the slow reader queue filled within 600 messages");
        assert_eq!(acks.last(), Some(&json!(1)), "message {i}");
        assert!(acks[..acks.len() - 1].iter().all(|d| d == &json!(2)));
        assert_eq!(fast.recv_type("bye").await["peer"], slow_id);
        if !classic_sender {
            assert_eq!(native.recv_type("bye").await["peer"], slow_id);
        }
    }
}

/// Key order, number spellings that no f64 keeps (the fuzz finding of
/// issue #12), an escape: whoever relays it, a peer gets this very text.
const DATA: &str = r#"{"z":1,"a":{"y":377777777777777700000000000000000000001731820631,"b":[1.0,-0,1E2,0.30000000000000000001]},"m":"\u00e9"}"#;

/// A native peer read as raw text: `Client` parses frames, which would
/// hide what this test looks at.
struct RawNative {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawNative {
    async fn connect(server: &Server) -> RawNative {
        let (ws, _) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(server.ws_url("")))
                .await
                .expect("connect in time")
                .expect("websocket upgrade");
        RawNative { ws }
    }

    /// The next text frame containing `needle`, skipping others.
    async fn text_with(&mut self, needle: &str) -> String {
        for _ in 0..32 {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("stream open")
                .expect("read");
            if let Message::Text(t) = msg
                && t.as_str().contains(needle)
            {
                return t.as_str().to_string();
            }
        }
        panic!("no frame with {needle} within 32 frames");
    }
}

#[tokio::test]
async fn relayed_data_keeps_its_text_on_both_faces() {
    let s = Server::start(BIN, &[], &[]).await;
    let mut a = Sio::connect(&s, None).await.expect("a connects");
    let mut b = Sio::connect(&s, None).await.expect("b connects");
    let mut native = RawNative::connect(&s).await;
    native
        .ws
        .send(Message::text(r#"{"type":"join","room":"r","id":1}"#))
        .await
        .expect("send");
    native.text_with(r#""type":"joined""#).await;
    for sio in [&mut a, &mut b] {
        sio.emit("join", &[json!("r")], None).await;
        sio.expect("joined").await;
    }

    // classic → classic and classic → native
    a.send(&format!(r#"429["message","r",{DATA}]"#)).await;
    assert_eq!(a.ack(9).await, json!({"delivered": 2}));
    let expected = format!(r#"42["message","r",{DATA}]"#);
    let mut got = String::new();
    for _ in 0..8 {
        got = b.packet().await;
        if got.starts_with(r#"42["message""#) {
            break;
        }
    }
    assert_eq!(got, expected);
    let frame = native.text_with(r#""type":"message""#).await;
    assert!(frame.ends_with(&format!(r#","data":{DATA}}}"#)), "{frame}");

    // native → classic
    native
        .ws
        .send(Message::text(format!(
            r#"{{"type":"message","room":"r","data":{DATA}}}"#
        )))
        .await
        .expect("send");
    for sio in [&mut a, &mut b] {
        let mut got = String::new();
        for _ in 0..8 {
            got = sio.packet().await;
            if got.starts_with(r#"42["message""#) {
                break;
            }
        }
        assert_eq!(got, expected);
    }
}

#[tokio::test]
async fn a_session_that_never_connects_is_closed_soon() {
    let s = Server::start(
        BIN,
        &[("SWITCHBOARD_LIMITS__SOCKETIO_CONNECT_TIMEOUT_SECS", "1")],
        &[],
    )
    .await;
    let mut idle = Sio::open(&s).await.expect("handshake");
    // It answers pings, so only the connect timeout can end it.
    assert!(
        idle.until_closed(WAIT).await.is_some(),
        "still open after {WAIT:?} without CONNECT"
    );
}

#[tokio::test]
async fn binary_attachments_close_the_connection_unbuffered() {
    let s = Server::start(BIN, &[], &[]).await;
    // Before CONNECT: a header announcing many attachments.
    let mut early = Sio::open(&s).await.expect("handshake");
    early
        .send(r#"451000-["message","r",{"_placeholder":true,"num":0}]"#)
        .await;
    assert!(early.until_closed(WAIT).await.is_some(), "header accepted");
    // After CONNECT: two attachments, which the server would buffer.
    let mut sio = Sio::connect(&s, None).await.expect("connects");
    sio.emit("join", &[json!("r")], None).await;
    sio.expect("joined").await;
    sio.send(
        r#"452-["message","r",[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]]"#,
    )
    .await;
    assert!(sio.until_closed(WAIT).await.is_some(), "two accepted");
    // One, but too large.
    let mut big = Sio::connect(&s, None).await.expect("connects");
    big.send(r#"451-["message","r",{"_placeholder":true,"num":0}]"#)
        .await;
    let _ = big.ws.send(Message::binary(vec![0u8; 4096])).await;
    assert!(big.until_closed(WAIT).await.is_some(), "4 KiB accepted");
}

#[tokio::test]
async fn sessions_waiting_for_connect_are_capped_per_address() {
    let s = Server::start(
        BIN,
        &[("SWITCHBOARD_LIMITS__SOCKETIO_PENDING_PER_IP", "2")],
        &[],
    )
    .await;
    let mut first = Sio::open(&s).await.expect("first handshake");
    let _second = Sio::open(&s).await.expect("second handshake");
    let refused = Sio::open(&s).await.err().expect("third refused");
    assert!(refused.to_string().contains("429"), "{refused}");
    // A session that connects gives its place back.
    first.send("40").await;
    assert!(first.packet().await.starts_with("40"));
    let _third = Sio::open(&s).await.expect("a place again");
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_sends_socketio_clients_their_disconnect() {
    let mut s = Server::start(BIN, &[], &[]).await;
    let mut a = Sio::connect(&s, None).await.expect("connects");
    a.emit("join", &[json!("r")], None).await;
    a.expect("joined").await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let seen = a.until_closed(WAIT).await.expect("closed in time");
    assert!(seen.iter().any(|p| p == "41"), "no DISCONNECT in {seen:?}");
    let exit = s.wait_exit(WAIT).await.expect("exited in time");
    assert!(exit.success(), "exit status {exit:?}");
}
