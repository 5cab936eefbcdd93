//! PROTOCOL.md §1 over real WebSockets to a real switchboard process on
//! ports picked at run time.

use std::time::Duration;

use serde_json::json;
use switchboard_testkit::{Client, Server, WAIT};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

async fn server() -> Server {
    Server::start(BIN, &[], &[]).await
}

async fn server_with(env: &[(&str, &str)]) -> Server {
    Server::start(BIN, env, &[]).await
}

/// Two clients in `room`, the first having seen the second arrive.
async fn pair_in_room(s: &Server, room: &str) -> (Client, Client) {
    let mut a = Client::connect(&s.ws_url("")).await;
    let mut b = Client::connect(&s.ws_url("")).await;
    a.join(room).await;
    b.join(room).await;
    a.recv_type("other_joined").await;
    (a, b)
}

#[tokio::test]
async fn welcome_has_everything_a_client_needs() {
    let s = server().await;
    let c = Client::connect(&s.ws_url("")).await;
    let w = &c.hello;
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["protocol"], 1);
    assert!(w["session"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(w["resume_token"].as_str().is_some_and(|v| v.len() >= 16));
    assert!(w["peer"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(w["ice_servers"].is_array());
    assert!(w.get("seq").is_none(), "welcome carries no seq");
}

#[tokio::test]
async fn join_leave_and_bye() {
    let s = server().await;
    let mut a = Client::connect(&s.ws_url("")).await;
    let mut b = Client::connect(&s.ws_url("")).await;
    a.send(json!({"type":"join","room":"r","meta":{"name":"A"}}))
        .await;
    let ja = a.recv_type("joined").await;
    assert_eq!(ja["room"], "r");
    assert_eq!(ja["peer"], a.peer());
    assert_eq!(ja["peers"], json!([]));
    assert_eq!(ja["seq"], 1);

    b.send(json!({"type":"join","room":"r","meta":{"name":"B"}}))
        .await;
    let jb = b.recv_type("joined").await;
    assert_eq!(
        jb["peers"],
        json!([{"peer": a.peer(), "meta": {"name":"A"}}])
    );
    let oj = a.recv_type("other_joined").await;
    assert_eq!(oj["room"], "r");
    assert_eq!(oj["peer"], b.peer());
    assert_eq!(oj["meta"], json!({"name":"B"}));

    let again = b.request(json!({"type":"join","room":"r"}), 7).await;
    assert_eq!(again["type"], "error");
    assert_eq!(again["code"], "already_joined");

    let left = b.request(json!({"type":"leave","room":"r"}), 8).await;
    assert_eq!(left["type"], "left");
    assert_eq!(left["room"], "r");
    let bye = a.recv_type("bye").await;
    assert_eq!(
        bye,
        json!({"type":"bye","room":"r","peer":b.peer(),"seq":bye["seq"]})
    );

    let not_in = b.request(json!({"type":"leave","room":"r"}), 9).await;
    assert_eq!(not_in["code"], "not_in_room");
}

#[tokio::test]
async fn messages_to_the_room_and_to_one_peer_with_acks() {
    let s = server().await;
    let mut a = Client::connect(&s.ws_url("")).await;
    let mut b = Client::connect(&s.ws_url("")).await;
    let mut c = Client::connect(&s.ws_url("")).await;
    for x in [&mut a, &mut b, &mut c] {
        x.join("room").await;
    }
    let offer = json!({"kind":"offer","sdp":"v=0\r\n..."});
    let ack = a
        .request(json!({"type":"message","room":"room","data":offer}), 1)
        .await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["delivered"], 2);
    for x in [&mut b, &mut c] {
        let m = x.recv_type("message").await;
        assert_eq!(m["room"], "room");
        assert_eq!(m["from"], a.peer());
        assert_eq!(m["data"], offer);
    }

    let ack = a
        .request(
            json!({"type":"message","room":"room","to":b.peer(),"data":{"kind":"answer"}}),
            2,
        )
        .await;
    assert_eq!(ack["delivered"], 1);
    assert_eq!(b.recv_type("message").await["data"]["kind"], "answer");
    c.expect_silence(Duration::from_millis(300)).await;

    let err = a
        .request(
            json!({"type":"message","room":"room","to":"nobody","data":1}),
            3,
        )
        .await;
    assert_eq!(err["code"], "no_such_peer");
    let err = a
        .request(json!({"type":"message","room":"elsewhere","data":1}), 4)
        .await;
    assert_eq!(err["code"], "not_in_room");

    // Without an id there is no ack, but the message still arrives.
    a.send(json!({"type":"message","room":"room","to":c.peer(),"data":"hi"}))
        .await;
    assert_eq!(c.recv_type("message").await["data"], "hi");
    let pong = a.request(json!({"type":"ping"}), 5).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn rooms_never_see_each_others_traffic() {
    let s = server().await;
    let mut a1 = Client::connect(&s.ws_url("")).await;
    let mut a2 = Client::connect(&s.ws_url("")).await;
    let mut b1 = Client::connect(&s.ws_url("")).await;
    let mut b2 = Client::connect(&s.ws_url("")).await;
    a1.join("a").await;
    a2.join("a").await;
    b1.join("b").await;
    b2.join("b").await;
    a1.recv_type("other_joined").await;
    b1.recv_type("other_joined").await;
    for i in 0..20 {
        a1.send(json!({"type":"message","room":"a","data":{"n":i,"room":"a"}}))
            .await;
        b1.send(json!({"type":"message","room":"b","data":{"n":i,"room":"b"}}))
            .await;
    }
    for i in 0..20 {
        let m = a2.recv().await;
        assert_eq!(m["data"], json!({"n":i,"room":"a"}));
        let m = b2.recv().await;
        assert_eq!(m["data"], json!({"n":i,"room":"b"}));
    }
    a2.expect_silence(Duration::from_millis(200)).await;
    b2.expect_silence(Duration::from_millis(200)).await;
    a1.expect_silence(Duration::from_millis(100)).await;
    b1.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn full_at_capacity() {
    let s = server_with(&[("SWITCHBOARD_ROOMS__MAX_PEERS", "2")]).await;
    let mut a = Client::connect(&s.ws_url("")).await;
    let mut b = Client::connect(&s.ws_url("")).await;
    let mut c = Client::connect(&s.ws_url("")).await;
    a.join("r").await;
    b.join("r").await;
    c.send(json!({"type":"join","room":"r"})).await;
    let full = c.recv().await;
    assert_eq!(full["type"], "full");
    assert_eq!(full["room"], "r");
    // Not a member: its messages go nowhere.
    let err = c
        .request(json!({"type":"message","room":"r","data":1}), 1)
        .await;
    assert_eq!(err["code"], "not_in_room");
    // A place frees up.
    b.close(1000).await;
    a.recv_type("bye").await;
    assert_eq!(c.join("r").await["type"], "joined");
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_keeps_working() {
    let s = server_with(&[("SWITCHBOARD_LIMITS__MAX_MESSAGE_BYTES", "1024")]).await;
    let mut a = Client::connect(&s.ws_url("")).await;
    a.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(a.recv().await["code"], "bad_request");
    a.send_raw(Message::text("this is not json")).await;
    assert_eq!(a.recv().await["code"], "bad_request");
    a.send_raw(Message::text("[1,2,3]")).await;
    assert_eq!(a.recv().await["code"], "bad_request");
    let e = a.request(json!({"type":"teleport"}), 1).await;
    assert_eq!(e["code"], "bad_request");
    let e = a.request(json!({"type":"join"}), 2).await;
    assert_eq!(e["code"], "bad_request");
    let e = a.request(json!({"type":"join","room":""}), 3).await;
    assert_eq!(e["code"], "bad_request");
    let e = a
        .request(json!({"type":"join","room":"x".repeat(129)}), 4)
        .await;
    assert_eq!(e["code"], "bad_request");
    let e = a
        .request(json!({"type":"join","room":"bell\u{7}"}), 5)
        .await;
    assert_eq!(e["code"], "bad_request");
    a.send(json!({"type":"message","room":"r","data":"x".repeat(2000)}))
        .await;
    assert_eq!(a.recv().await["code"], "too_large");
    // Still alive and in order.
    assert_eq!(a.request(json!({"type":"ping"}), 6).await["type"], "pong");
    assert_eq!(a.join("r").await["room"], "r");
}

#[tokio::test]
async fn close_1000_or_1001_means_bye_at_once() {
    let s = server().await;
    let mut a = Client::connect(&s.ws_url("")).await;
    let mut b = Client::connect(&s.ws_url("")).await;
    let mut c = Client::connect(&s.ws_url("")).await;
    a.join("r").await;
    b.join("r").await;
    c.join("r").await;
    let peer_b = b.peer();
    let peer_c = c.peer();
    b.close(1000).await;
    let bye = a.recv_type("bye").await;
    assert_eq!(bye["peer"], peer_b);
    c.close(1001).await;
    let bye = a.recv_type("bye").await;
    assert_eq!(bye["peer"], peer_c);
}

#[tokio::test]
async fn a_cut_connection_resumes_and_gets_every_frame_once_in_order() {
    let s = server_with(&[("SWITCHBOARD_SESSION__RESUME_GRACE_SECS", "30")]).await;
    let (mut a, b) = pair_in_room(&s, "r").await;
    let (session, token, peer_b, last) = (b.session(), b.resume_token(), b.peer(), b.last_seq);
    b.cut();

    // During the grace period the others see nothing, and messages to the
    // dropped peer are still accepted and counted.
    for i in 0..50 {
        let ack = a
            .request(json!({"type":"message","room":"r","data":{"n":i}}), i)
            .await;
        assert_eq!(ack["delivered"], 1, "{ack}");
    }
    a.expect_silence(Duration::from_millis(500)).await;

    let url = s.ws_url(&format!(
        "resume={session}&resume_token={token}&last_seq={last}"
    ));
    let mut b = Client::connect(&url).await;
    assert_eq!(b.hello["type"], "resumed");
    assert_eq!(b.hello["session"], session);
    assert_eq!(b.hello["peer"], peer_b);
    b.last_seq = last;
    for i in 0..50 {
        let m = b.recv().await; // recv asserts seq contiguity
        assert_eq!(m["type"], "message");
        assert_eq!(m["data"]["n"], i);
    }
    b.expect_silence(Duration::from_millis(300)).await;
    // And it carries on as the same peer.
    let ack = b
        .request(json!({"type":"message","room":"r","data":"back"}), 99)
        .await;
    assert_eq!(ack["delivered"], 1);
    let m = a.recv_type("message").await;
    assert_eq!(m["from"], peer_b);
}

#[tokio::test]
async fn an_unresumed_cut_ends_in_bye_after_the_grace_period() {
    let s = server_with(&[("SWITCHBOARD_SESSION__RESUME_GRACE_SECS", "1")]).await;
    let (mut a, b) = pair_in_room(&s, "r").await;
    let peer_b = b.peer();
    let cut_at = tokio::time::Instant::now();
    b.cut();
    a.expect_silence(Duration::from_millis(600)).await;
    let bye = a.recv_type("bye").await;
    assert_eq!(bye["peer"], peer_b);
    assert!(
        cut_at.elapsed() >= Duration::from_millis(900),
        "bye came before the grace period ended"
    );
}

#[tokio::test]
async fn a_silent_connection_times_out_into_the_grace_period() {
    let s = server_with(&[
        ("SWITCHBOARD_SESSION__HEARTBEAT_INTERVAL_SECS", "1"),
        ("SWITCHBOARD_SESSION__HEARTBEAT_TIMEOUT_SECS", "2"),
        ("SWITCHBOARD_SESSION__RESUME_GRACE_SECS", "1"),
    ])
    .await;
    let (mut a, b) = pair_in_room(&s, "r").await;
    // b keeps its socket open but never reads again, so it never answers
    // the server's pings: silence, then the grace period, then bye.
    let peer_b = b.peer();
    let started = tokio::time::Instant::now();
    let bye = a.recv_type("bye").await;
    assert_eq!(bye["peer"], peer_b);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "bye before the heartbeat timeout"
    );
    drop(b);
}

#[tokio::test]
async fn a_client_that_answers_pings_outlives_the_heartbeat_timeout() {
    let s = server_with(&[
        ("SWITCHBOARD_SESSION__HEARTBEAT_INTERVAL_SECS", "1"),
        ("SWITCHBOARD_SESSION__HEARTBEAT_TIMEOUT_SECS", "2"),
    ])
    .await;
    let (mut a, mut b) = pair_in_room(&s, "r").await;
    // Both only read (and so answer pings) for longer than the timeout.
    let quiet = Duration::from_millis(3500);
    tokio::join!(a.expect_silence(quiet), b.expect_silence(quiet));
    let ack = a
        .request(json!({"type":"message","room":"r","data":"still here"}), 1)
        .await;
    assert_eq!(ack["delivered"], 1);
    assert_eq!(b.recv_type("message").await["data"], "still here");
}

#[tokio::test]
async fn a_resume_that_cannot_be_served_gets_resume_failed_and_a_fresh_welcome() {
    let s = server_with(&[("SWITCHBOARD_SESSION__REPLAY_FRAMES", "4")]).await;
    let mut a = Client::connect(&s.ws_url("")).await;
    let mut b = Client::connect(&s.ws_url("")).await;
    a.join("r").await;
    b.join("r").await;
    let (session, token, last) = (b.session(), b.resume_token(), b.last_seq);

    // A wrong token.
    let mut x = Client::connect(&s.ws_url(&format!(
        "resume={session}&resume_token=wrong&last_seq={last}"
    )))
    .await;
    assert_eq!(x.hello["type"], "error");
    assert_eq!(x.hello["code"], "resume_failed");
    let w = x.recv_type("welcome").await;
    assert_ne!(w["session"], session);

    // A gap larger than the replay buffer.
    b.cut();
    for i in 0..10 {
        a.request(json!({"type":"message","room":"r","data":i}), i)
            .await;
    }
    let mut b2 = Client::connect(&s.ws_url(&format!(
        "resume={session}&resume_token={token}&last_seq={last}"
    )))
    .await;
    assert_eq!(b2.hello["code"], "resume_failed");
    let w = b2.recv_type("welcome").await;
    assert_ne!(w["session"], session);
    // The fresh session must join again.
    let e = b2
        .request(json!({"type":"message","room":"r","data":1}), 1)
        .await;
    assert_eq!(e["code"], "not_in_room");
}

#[tokio::test]
async fn a_resume_of_a_live_session_takes_it_over() {
    let s = server().await;
    let mut a = Client::connect(&s.ws_url("")).await;
    let mut b = Client::connect(&s.ws_url("")).await;
    a.join("r").await;
    b.join("r").await;
    let url = s.ws_url(&format!(
        "resume={}&resume_token={}&last_seq={}",
        b.session(),
        b.resume_token(),
        b.last_seq
    ));
    let mut b2 = Client::connect(&url).await;
    assert_eq!(b2.hello["type"], "resumed");
    assert!(
        b.closed_code()
            .await
            .is_some_and(|c| c != 1000 && c != 1001)
    );
    b2.last_seq = b.last_seq;
    a.recv_type("other_joined").await;
    a.send(json!({"type":"message","room":"r","data":"to the new socket"}))
        .await;
    assert_eq!(b2.recv_type("message").await["data"], "to the new socket");
    // No bye: the peer never left.
    a.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_flood_is_rate_limited_while_others_are_served_promptly() {
    let s = server_with(&[
        ("SWITCHBOARD_LIMITS__RATE_PER_SEC", "20"),
        ("SWITCHBOARD_LIMITS__RATE_BURST", "40"),
    ])
    .await;
    let mut flooder = Client::connect(&s.ws_url("")).await;
    let mut other = Client::connect(&s.ws_url("")).await;
    for i in 0..500u64 {
        flooder.send(json!({"type":"ping","id":i})).await;
    }
    let started = tokio::time::Instant::now();
    let pong = other.request(json!({"type":"ping"}), 1).await;
    assert_eq!(pong["type"], "pong");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the other client waited {:?}",
        started.elapsed()
    );
    let mut limited = 0;
    let mut pongs = 0;
    for _ in 0..500 {
        let v = flooder.recv().await;
        match v["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") if v["code"] == "rate_limited" => limited += 1,
            _ => panic!("unexpected {v}"),
        }
    }
    assert!(limited > 0, "no rate_limited in a flood of 500");
    assert!(pongs >= 40, "the burst must be served: {pongs}");
}

async fn http_status(url: &str, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().expect("request");
    if let Some(o) = origin {
        req.headers_mut()
            .insert("Origin", o.parse().expect("header"));
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("timeout")
    {
        Ok((_ws, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn jwt(secret: &str, claims: serde_json::Value) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let head = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64.encode(claims.to_string());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{head}.{body}").as_bytes());
    format!("{head}.{body}.{}", b64.encode(mac.finalize().into_bytes()))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// At least 32 bytes, as the server demands.
const SECRET: &str = "a-test-secret-of-32-bytes-or-more";

#[tokio::test]
async fn tokens_are_checked_before_the_upgrade() {
    let s = server_with(&[("SWITCHBOARD_AUTH__JWT_SECRET", SECRET)]).await;
    assert_eq!(http_status(&s.ws_url(""), None).await, 401);
    let forged = jwt("not-the-secret", json!({"sub":"eve","exp":unix_now()+600}));
    assert_eq!(
        http_status(&s.ws_url(&format!("token={forged}")), None).await,
        401
    );
    let expired = jwt(SECRET, json!({"sub":"eve","exp":unix_now()-60}));
    assert_eq!(
        http_status(&s.ws_url(&format!("token={expired}")), None).await,
        401
    );
    let no_sub = jwt(SECRET, json!({"exp":unix_now()+600}));
    assert_eq!(
        http_status(&s.ws_url(&format!("token={no_sub}")), None).await,
        401
    );

    let good = jwt(
        SECRET,
        json!({"sub":"alice","exp":unix_now()+600,"rooms":["allowed"]}),
    );
    let mut c = Client::connect(&s.ws_url(&format!("token={good}"))).await;
    assert_eq!(c.hello["type"], "welcome");
    assert_eq!(c.join("allowed").await["type"], "joined");
    let e = c.request(json!({"type":"join","room":"secret"}), 1).await;
    assert_eq!(e["code"], "forbidden");
}

#[tokio::test]
async fn a_token_is_refused_before_its_nbf() {
    let s = server_with(&[("SWITCHBOARD_AUTH__JWT_SECRET", SECRET)]).await;
    let early = jwt(
        SECRET,
        json!({"sub":"alice","exp":unix_now()+600,"nbf":unix_now()+300}),
    );
    assert_eq!(
        http_status(&s.ws_url(&format!("token={early}")), None).await,
        401
    );
    let begun = jwt(
        SECRET,
        json!({"sub":"alice","exp":unix_now()+600,"nbf":unix_now()-5}),
    );
    assert_eq!(
        http_status(&s.ws_url(&format!("token={begun}")), None).await,
        101
    );
}

/// Runs the binary with `secret` and returns its exit code and stderr, or
/// `None` when it started serving.
async fn start_with_secret(secret: &str) -> Option<(Option<i32>, String)> {
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--turn-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--media-listen",
            "127.0.0.1:0",
        ])
        .env("SWITCHBOARD_AUTH__JWT_SECRET", secret)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let status = tokio::time::timeout(WAIT, child.wait()).await.ok()?;
    let out = child.wait_with_output().await.expect("output");
    Some((
        status.expect("exit status").code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn an_empty_or_short_secret_stops_the_start() {
    for (secret, says) in [("", "empty"), ("topsecret", "at least 32 bytes")] {
        let (code, stderr) = start_with_secret(secret)
            .await
            .unwrap_or_else(|| panic!("started with the secret {secret:?}"));
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("auth.jwt_secret") && stderr.contains(says),
            "a clear error: {stderr}"
        );
    }
}

#[tokio::test]
async fn ice_servers_are_not_cached() {
    let s = server().await;
    let (status, head, _) =
        switchboard_testkit::http_get_full(&s.http, "/api/ice-servers", &[]).await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ncache-control: no-store\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn a_stderr_nobody_reads_does_not_stall_the_server() {
    // Debug logging: hyper, tungstenite and the hub write lines for every
    // connection, and a few dozen connections fill the pipe.
    let s =
        Server::start_with_stalled_stderr(BIN, &[("SWITCHBOARD_LOG__LEVEL", "debug")], &[]).await;
    let mut watcher = Client::connect(&s.ws_url("")).await;
    watcher.join("r").await;
    for i in 0..300 {
        let mut c = tokio::time::timeout(WAIT, Client::connect(&s.ws_url("")))
            .await
            .unwrap_or_else(|_| panic!("connection {i} stalled: logging blocks the server"));
        c.join("r").await;
        watcher.recv_type("other_joined").await;
        c.close(1000).await;
        watcher.recv_type("bye").await;
    }
    let (status, metrics) = switchboard_testkit::http_get(&s.http, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("switchboard_log_lines_dropped_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn foreign_browser_origins_are_refused() {
    let s = server_with(&[(
        "SWITCHBOARD_AUTH__ALLOWED_ORIGINS",
        "[\"https://app.example\"]",
    )])
    .await;
    assert_eq!(
        http_status(&s.ws_url(""), Some("https://evil.example")).await,
        403
    );
    assert_eq!(
        http_status(&s.ws_url(""), Some("https://app.example")).await,
        101
    );
    assert_eq!(http_status(&s.ws_url(""), None).await, 101);
}

#[tokio::test]
async fn a_slow_reader_is_closed_with_1013_and_nobody_else_waits() {
    let s = server_with(&[
        ("SWITCHBOARD_SESSION__OUTBOUND_QUEUE_FRAMES", "8"),
        ("SWITCHBOARD_SESSION__RESUME_GRACE_SECS", "30"),
        // What the kernel buffered and the client never read must still be
        // in the replay buffer: with 60 KB frames that is more than the
        // default 1 MiB.
        ("SWITCHBOARD_SESSION__REPLAY_BYTES", "67108864"),
        ("SWITCHBOARD_LIMITS__RATE_PER_SEC", "1000000"),
        ("SWITCHBOARD_LIMITS__RATE_BURST", "1000000"),
    ])
    .await;
    let mut sender = Client::connect(&s.ws_url("")).await;
    let mut slow = Client::connect(&s.ws_url("")).await;
    let mut fast = Client::connect(&s.ws_url("")).await;
    sender.join("r").await;
    slow.join("r").await;
    fast.join("r").await;
    sender.recv_type("other_joined").await;
    sender.recv_type("other_joined").await;
    slow.recv_type("other_joined").await;
    let (session, token, last) = (slow.session(), slow.resume_token(), slow.last_seq);
    let blob = "x".repeat(60_000);
    // The server's goodbye to a slow reader waits (2 s at most) for its
    // socket to drain: read it as soon as the server has given up on it,
    // not after the whole run, which takes longer than that on a busy
    // machine.
    let http = s.http.clone();
    let slow_close = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + 4 * WAIT;
        loop {
            let (_, metrics) = switchboard_testkit::http_get(&http, "/metrics", &[]).await;
            let closed = metrics.lines().any(|l| {
                l.strip_prefix("switchboard_slow_reader_closes_total ")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .is_some_and(|v| v >= 1.0)
            });
            if closed {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the slow reader was never closed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        slow.closed_code().await
    });
    // Enough to fill the loopback socket buffers and then the queue; the
    // fast reader keeps up the whole time.
    const N: u64 = 600;
    for i in 0..N {
        sender
            .send(json!({"type":"message","room":"r","data":{"n":i,"blob":blob}}))
            .await;
        let m = fast.recv_type("message").await;
        assert_eq!(m["data"]["n"], i);
    }
    assert_eq!(
        slow_close.await.expect("the slow reader's task"),
        Some(1013)
    );

    // Nothing was lost: the slow reader resumes from what it had read and
    // gets every message once, in order (recv checks seq contiguity).
    let url = s.ws_url(&format!(
        "resume={session}&resume_token={token}&last_seq={last}"
    ));
    let mut again = Client::connect(&url).await;
    assert_eq!(again.hello["type"], "resumed");
    again.last_seq = last;
    for i in 0..N {
        let m = again.recv().await;
        assert_eq!(m["data"]["n"], i);
    }
}

#[tokio::test]
async fn requests_that_are_not_websocket_upgrades_are_refused() {
    let s = server().await;
    let status = |headers: &[(&str, &str)]| {
        let addr = s.http.clone();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            switchboard_testkit::http_get(&addr, "/ws", &headers)
                .await
                .0
        }
    };
    let (conn, upgrade) = (("Connection", "Upgrade"), ("Upgrade", "websocket"));
    assert_eq!(status(&[]).await, 426, "a plain GET");
    let key = ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    let v8 = ("Sec-WebSocket-Version", "8");
    assert_eq!(
        status(&[conn, upgrade, v8, key]).await,
        426,
        "another version"
    );
    let v13 = ("Sec-WebSocket-Version", "13");
    assert_eq!(status(&[conn, upgrade, v13]).await, 400, "no key");
    // The server is unharmed.
    let mut c = Client::connect(&s.ws_url("")).await;
    assert_eq!(c.request(json!({"type":"ping"}), 1).await["type"], "pong");
}

#[tokio::test]
async fn health_metrics_and_the_web_client() {
    let s = server().await;
    let get = |path: &'static str| {
        let addr = s.http.clone();
        async move { switchboard_testkit::http_get(&addr, path, &[]).await.0 }
    };
    assert_eq!(get("/healthz").await, 200);
    let (status, metrics) = switchboard_testkit::http_get(&s.http, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("switchboard_sessions"), "{metrics}");
    assert_eq!(get("/").await, 200);
    assert_eq!(get("/sdk/switchboard.js").await, 200);
    assert_eq!(get("/no-such-file.txt").await, 404);
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_cleanly() {
    let mut s = server().await;
    let mut a = Client::connect(&s.ws_url("")).await;
    a.join("r").await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert_eq!(a.closed_code().await, Some(1001));
    let exit = s
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exited in time");
    assert!(exit.success(), "exit status {exit:?}");
}

/// PROTOCOL.md §1, "An ack is a promise", with the default queue and
/// replay settings (only the rate limit is raised, so that the test runs
/// in seconds): a reader that stops reading while 8 KB messages arrive is
/// closed; every message its sender got `delivered: 1` for then either
/// reaches it on resume, in order and once, or its session ended visibly
/// (the sender saw `bye`, the resume gets `resume_failed`), and nothing is
/// counted after the `bye`.
#[tokio::test]
async fn an_ack_is_a_promise_with_the_default_buffers() {
    let s = server_with(&[
        ("SWITCHBOARD_LIMITS__RATE_PER_SEC", "1000000"),
        ("SWITCHBOARD_LIMITS__RATE_BURST", "1000000"),
    ])
    .await;
    let mut sender = Client::connect(&s.ws_url("")).await;
    let slow = Client::connect(&s.ws_url("")).await;
    let mut slow = slow;
    sender.join("r").await;
    slow.join("r").await;
    let other = sender.recv_type("other_joined").await;
    let slow_peer = other["peer"].clone();
    let (session, token, last) = (slow.session(), slow.resume_token(), slow.last_seq);
    let blob = "x".repeat(8 * 1024);
    // Far more than loopback socket buffers, the queue and replay together.
    const N: u64 = 3000;
    let mut counted = Vec::new();
    let mut bye_after: Option<u64> = None;
    for i in 0..N {
        sender
            .send(json!({"type":"message","room":"r","data":{"n":i,"blob":blob},"id":i}))
            .await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "no ack for {i}");
            let v = sender.recv().await;
            if v["type"] == "bye" {
                assert_eq!(v["peer"], slow_peer, "{v}");
                bye_after.get_or_insert(i);
                continue;
            }
            assert_eq!(v["reply_to"], i, "{v}");
            assert_eq!(v["type"], "ack", "{v}");
            match v["delivered"].as_u64() {
                Some(1) => {
                    assert!(bye_after.is_none(), "message {i} counted after the bye");
                    counted.push(i);
                }
                Some(0) => {}
                other => panic!("delivered {other:?}"),
            }
            break;
        }
        // A few more after the bye, to see that none is counted.
        if bye_after.is_some_and(|b| i >= b + 5) {
            break;
        }
    }
    // An uncounted message means the reader's session ended: the sender
    // hears `bye` right after that ack.
    if counted.len() as u64 != N && bye_after.is_none() {
        let v = sender.recv_type("bye").await;
        assert_eq!(v["peer"], slow_peer);
        bye_after = Some(N);
    }
    slow.cut();
    let url = s.ws_url(&format!(
        "resume={session}&resume_token={token}&last_seq={last}"
    ));
    let mut again = Client::connect(&url).await;
    if bye_after.is_some() {
        assert_eq!(again.hello["type"], "error", "{}", again.hello);
        assert_eq!(again.hello["code"], "resume_failed");
    } else {
        // No bye: nothing was lost, so the gap is all there. (With the
        // defaults the reader's replay is full when it is closed, so in
        // practice the next message ends it; before the rule a session in
        // grace went on evicting and this resume failed.)
        assert_eq!(again.hello["type"], "resumed", "{}", again.hello);
        again.last_seq = last;
        for &i in &counted {
            let m = again.recv_type("message").await;
            assert_eq!(m["data"]["n"], i);
        }
    }
}

/// A client that confirms with `last_seq` in its pings can resume from
/// what it confirmed, not from before it: the server forgot those frames.
#[tokio::test]
async fn a_confirmed_session_resumes_from_its_confirmation_only() {
    let s = server().await;
    let (mut a, mut b) = pair_in_room(&s, "r").await;
    for i in 0..10 {
        a.send(json!({"type":"message","room":"r","data":i})).await;
        assert_eq!(b.recv_type("message").await["data"], i);
    }
    let confirmed = b.last_seq;
    let pong = b
        .request(json!({"type":"ping","last_seq":confirmed}), 1)
        .await;
    assert_eq!(pong["type"], "pong");
    // A confirmation of frames never sent is refused.
    let bad = b
        .request(json!({"type":"ping","last_seq":confirmed + 100}), 2)
        .await;
    assert_eq!(bad["code"], "bad_request", "{bad}");
    let (session, token, seen) = (b.session(), b.resume_token(), b.last_seq);
    b.cut();
    a.send(json!({"type":"message","room":"r","data":"later"}))
        .await;
    let url = |from: u64| {
        s.ws_url(&format!(
            "resume={session}&resume_token={token}&last_seq={from}"
        ))
    };
    let mut again = Client::connect(&url(confirmed)).await;
    assert_eq!(again.hello["type"], "resumed", "{}", again.hello);
    again.last_seq = confirmed;
    assert_eq!(again.recv().await["type"], "pong");
    assert_eq!(again.recv().await["code"], "bad_request");
    assert_eq!(again.recv().await["data"], "later");
    assert!(again.last_seq > seen);
    again.cut();
    let earlier = Client::connect(&url(confirmed - 1)).await;
    assert_eq!(earlier.hello["type"], "error", "{}", earlier.hello);
    assert_eq!(earlier.hello["code"], "resume_failed");
}

/// The connection task handles the requests a read burst holds before it
/// writes their answers; it must stop reading while a quarter of the queue
/// is taken, or a client that pipelines requests would be closed as a slow
/// reader (1013) for the server's own batching.
#[tokio::test]
async fn pipelined_requests_are_answered_without_a_slow_reader_close() {
    use futures_util::{SinkExt, StreamExt};
    let s = server_with(&[
        ("SWITCHBOARD_SESSION__OUTBOUND_QUEUE_FRAMES", "8"),
        ("SWITCHBOARD_LIMITS__RATE_PER_SEC", "0"),
    ])
    .await;
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(s.ws_url("")))
        .await
        .expect("connect in time")
        .expect("upgrade");
    // The welcome first, then 32 pings in one write: one read burst.
    let welcome = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("welcome");
    assert!(matches!(welcome, Some(Ok(Message::Text(_)))));
    for i in 0..32 {
        let ping = json!({"type":"ping","id":i}).to_string();
        ws.feed(Message::text(ping)).await.expect("feed");
    }
    ws.flush().await.expect("flush");
    let mut pongs = 0;
    for _ in 0..64 {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
                assert_eq!(v["type"], "pong", "{v}");
                pongs += 1;
                if pongs == 32 {
                    break;
                }
            }
            other => panic!("the connection ended after {pongs} pongs: {other:?}"),
        }
    }
    assert_eq!(pongs, 32);
}
