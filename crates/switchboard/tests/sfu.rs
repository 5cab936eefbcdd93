//! The SFU end to end (PROTOCOL.md §7): the real binary, real sockets,
//! str0m peers on 127.0.0.1 signaling through `/ws`.

mod sfu_support;
mod turn_support;

use std::time::{Duration, Instant};

use serde_json::json;
use sfu_support::{
    MediaPeer, drive_until, each_got_more, everyone_hears_everyone, frames_so_far, report,
};
use switchboard_testkit::{Client, Server, WAIT, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// How long ICE, DTLS and the first frames may take on a loaded machine.
const CONNECT: Duration = Duration::from_secs(15);

async fn server() -> Server {
    let s = Server::start(BIN, &[], &[]).await;
    let media = s.ready["media"]
        .as_str()
        .expect("READY names the media socket");
    assert!(media.starts_with("127.0.0.1:"), "{media}");
    s
}

/// Peers that joined and made their first offer.
async fn peers(s: &Server, room: &str, n: usize) -> Vec<MediaPeer> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut p = MediaPeer::join(s, room).await;
        p.offer_tracks().await;
        out.push(p);
    }
    out
}

#[tokio::test]
async fn two_then_three_peers_receive_each_others_media() {
    let s = server().await;
    let mut room = peers(&s, "call", 2).await;
    let ok = drive_until(&mut room, CONNECT, true, everyone_hears_everyone).await;
    assert!(ok, "two peers:\n{}", report(&room));
    // Each published two tracks, and each receives two: one per kind.
    for p in &room {
        assert_eq!(p.answers, 1, "one answer to the first offer");
        let other = &room.iter().find(|q| q.id != p.id).expect("two").id;
        assert_eq!(p.live_from(other), 2, "{}", report(&room));
    }

    let mut late = MediaPeer::join(&s, "call").await;
    late.offer_tracks().await;
    room.push(late);
    let ok = drive_until(&mut room, CONNECT, true, everyone_hears_everyone).await;
    assert!(ok, "three peers:\n{}", report(&room));
    for p in &room {
        assert!(p.errors.is_empty(), "{}", report(&room));
    }
}

#[tokio::test]
async fn a_leaving_peers_tracks_are_removed_from_the_others() {
    let s = server().await;
    let mut room = peers(&s, "leave", 3).await;
    let ok = drive_until(&mut room, CONNECT, true, everyone_hears_everyone).await;
    assert!(ok, "{}", report(&room));
    let mut gone = room.pop().expect("three");
    let offers: Vec<u32> = room.iter().map(|p| p.server_offers).collect();
    gone.ws.send(json!({"type":"leave","room":"leave"})).await;
    let left_at = Instant::now();
    let ok = drive_until(&mut room, WAIT, true, |peers| {
        peers.iter().all(|p| p.live_from(&gone.id) == 0)
    })
    .await;
    assert!(ok, "{} is still sent:\n{}", gone.id, report(&room));
    let took = left_at.elapsed();
    for (p, before) in room.iter().zip(offers) {
        assert!(
            p.server_offers > before,
            "a server offer removed the tracks"
        );
        assert!(
            p.frames
                .iter()
                .any(|f| f["type"] == "bye" && f["peer"] == gone.id.as_str())
        );
    }
    // PROTOCOL.md §7 says within a second; a loaded test machine gets slack.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // The two who stay still hear each other.
    let counts = frames_so_far(&room);
    let ok = drive_until(&mut room, CONNECT, true, |peers| {
        each_got_more(peers, &counts, 4)
    })
    .await;
    assert!(ok, "{}", report(&room));
}

#[tokio::test]
async fn media_outside_an_sfu_room_is_a_bad_request() {
    let s = server().await;
    let mut c = Client::connect(&s.ws_url("")).await;
    let joined = c.join("mesh-room").await;
    assert_eq!(joined["media"], "mesh", "{joined}");
    let reply = c
        .request(
            json!({"type":"media","room":"mesh-room","data":{"kind":"offer","sdp":"v=0\r\n"}}),
            1,
        )
        .await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "bad_request", "{reply}");
}

#[tokio::test]
async fn sdp_the_sfu_refuses_is_a_bad_request_and_the_peer_can_try_again() {
    let s = server().await;
    let mut p = MediaPeer::join(&s, "bad-sdp").await;
    p.send_media(json!({"kind":"offer","sdp":"this is not SDP"}))
        .await;
    let err = p.ws.recv_type("error").await;
    assert_eq!(err["code"], "bad_request", "{err}");
    // A good offer after it is answered.
    p.offer_tracks().await;
    let mut room = vec![p];
    let ok = drive_until(&mut room, CONNECT, false, |p| p[0].answers == 1).await;
    assert!(ok, "{}", report(&room));
}

#[tokio::test]
async fn garbage_on_the_media_port_does_not_disturb_a_running_call() {
    let s = server().await;
    let media: std::net::SocketAddr = s.ready["media"]
        .as_str()
        .expect("media")
        .parse()
        .expect("addr");
    let mut room = peers(&s, "garbage", 2).await;
    let ok = drive_until(&mut room, CONNECT, true, everyone_hears_everyone).await;
    assert!(ok, "{}", report(&room));

    // Every first byte the demultiplexer looks at (STUN 0-3, DTLS 20-63,
    // RTP/RTCP 128-191) and the ones it must refuse, from an address no
    // peer has, between the call's packets.
    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut sent = 0u64;
    let before = frames_so_far(&room);
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        for first in (0..=255u8).step_by(3) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 1 + (seed % 1200) as usize;
            let mut d: Vec<u8> = (0..len).map(|i| (seed >> (i % 57)) as u8).collect();
            d[0] = first;
            let _ = attacker.send_to(&d, media).await;
            sent += 1;
        }
        for p in room.iter_mut() {
            p.send_media_frames();
            p.step(Duration::from_millis(5)).await;
        }
    }
    let ok = drive_until(&mut room, CONNECT, true, |peers| {
        each_got_more(peers, &before, 20)
    })
    .await;
    assert!(
        ok,
        "the call stalled after {sent} garbage datagrams:\n{}",
        report(&room)
    );
    for p in &room {
        assert!(p.connected && p.errors.is_empty(), "{}", report(&room));
    }
    let (status, metrics) = http_get(&s.http, "/metrics", &[]).await;
    assert_eq!(status, 200);
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert!(value("switchboard_sfu_dropped_datagrams_total") >= 1.0);
    assert_eq!(value("switchboard_sfu_peers"), 2.0);
    assert_eq!(value("switchboard_sfu_rooms"), 1.0);
    assert!(value("switchboard_sfu_forwarded_frames_total") > 0.0);
    assert!(value("switchboard_sfu_forwarded_bytes_total") > 0.0);
}

/// Runs the binary with `args` and `env` and returns its exit code and
/// stderr; panics when it starts serving.
async fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args([
        "--http-listen",
        "127.0.0.1:0",
        "--turn-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "",
    ])
    .args(args)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("a refused start exits at once")
        .expect("runs");
    assert!(!out.status.success(), "started");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("READY"), "{stdout}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn sfu_rooms_without_media_are_refused_at_start() {
    let err = refused_start(
        &["--media-listen", ""],
        &[("SWITCHBOARD_ROOMS__MEDIA", "sfu")],
    )
    .await;
    assert!(err.contains("rooms.media"), "{err}");
}

#[tokio::test]
async fn a_media_address_set_on_purpose_must_bind() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let addr = taken.local_addr().expect("addr").to_string();
    let err = refused_start(&["--media-listen", &addr], &[]).await;
    assert!(err.contains("media.listen"), "{err}");
}

#[tokio::test]
async fn sfu_by_default_makes_sfu_rooms() {
    let s = Server::start(BIN, &[("SWITCHBOARD_ROOMS__MEDIA", "sfu")], &[]).await;
    let mut c = Client::connect(&s.ws_url("")).await;
    let joined = c.join("default-kind").await;
    assert_eq!(joined["media"], "sfu", "{joined}");
    // Asking for mesh when the room exists as SFU gets the room's kind.
    let mut d = Client::connect(&s.ws_url("")).await;
    d.send(json!({"type":"join","room":"default-kind","media":"mesh"}))
        .await;
    let joined = d.recv_type("joined").await;
    assert_eq!(joined["media"], "sfu", "{joined}");
}

#[tokio::test]
async fn an_sfu_room_on_a_server_without_media_gets_unavailable() {
    let s = Server::start(BIN, &[("SWITCHBOARD_MEDIA__LISTEN", "")], &[]).await;
    assert!(s.ready["media"].is_null(), "{}", s.ready);
    let mut c = Client::connect(&s.ws_url("")).await;
    c.send(json!({"type":"join","room":"no-relay","media":"sfu"}))
        .await;
    let err = c.recv_type("error").await;
    assert_eq!(err["code"], "unavailable", "{err}");
    c.send(json!({"type":"media","room":"no-relay","data":{"kind":"offer","sdp":"v=0"}}))
        .await;
    let err = c.recv_type("error").await;
    assert_eq!(err["code"], "unavailable", "{err}");
}

/// PROTOCOL.md §7: a client that cannot reach the media port relays to it
/// through switchboard's TURN, although loopback is no allowed peer here;
/// no other port of that address opens.
#[tokio::test]
async fn turn_clients_may_relay_to_the_media_port_and_nowhere_else_on_its_ip() {
    use switchboard_stun::Method;
    use turn_support::{Conn, TurnClient, error_code, is_success};

    let s = server().await;
    let media: std::net::SocketAddr = s.ready["media"]
        .as_str()
        .expect("media")
        .parse()
        .expect("addr");
    let turn: std::net::SocketAddr = s.ready["turn_udp"]
        .as_str()
        .expect("turn")
        .parse()
        .expect("addr");
    let c = Client::connect(&s.ws_url("")).await;
    let ice = &c.hello["ice_servers"][0];
    let mut t = TurnClient::new(
        Conn::udp(turn).await,
        ice["username"].as_str().expect("username"),
        ice["credential"].as_str().expect("credential"),
    );
    t.allocate().await.expect("allocates");
    let permit = |peer: std::net::SocketAddr| {
        move |b: &mut switchboard_stun::MessageBuilder<'_>| {
            b.add_xor_peer_address(peer);
        }
    };
    let ok = t.ask(Method::CREATE_PERMISSION, permit(media)).await;
    assert!(is_success(&ok), "the media socket is an allowed peer");
    let http: std::net::SocketAddr = s.http.parse().expect("addr");
    for other in [
        http,
        std::net::SocketAddr::new(media.ip(), media.port() ^ 1),
    ] {
        let refused = t.ask(Method::CREATE_PERMISSION, permit(other)).await;
        assert_eq!(error_code(&refused), Some(403), "{other}");
    }
    // What the client sends through the relay reaches the media socket
    // (which drops it: no peer sent it, and counts it).
    let dropped = || async {
        let (_, metrics) = http_get(&s.http, "/metrics", &[]).await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("switchboard_sfu_dropped_datagrams_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = dropped().await;
    let end = Instant::now() + WAIT;
    let mut reached = false;
    while Instant::now() < end && !reached {
        t.send_indication(media, &[0x16, 0xfe, 0xfd, 0, 0, 0, 0])
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        reached = dropped().await > before;
    }
    assert!(reached, "nothing relayed reached the media socket");
}

/// The server's host candidate in an answer: `a=candidate:.. IP PORT typ host`.
fn candidate_address(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| {
        let fields: Vec<&str> = l.trim().strip_prefix("a=candidate:")?.split(' ').collect();
        (fields.get(6) == Some(&"typ")).then(|| format!("{}:{}", fields[4], fields[5]))
    })
}

/// The default binding is a wildcard: the candidate is the address each
/// client's signaling connection reached (here 127.0.0.2, not the
/// loopback a server without a clue would pick), and replies leave from
/// it.
#[tokio::test]
async fn on_a_wildcard_socket_the_candidate_is_the_address_the_client_reached() {
    let s = Server::start_with_http(
        BIN,
        "127.0.0.2:0",
        &[("SWITCHBOARD_MEDIA__LISTEN", "0.0.0.0:0")],
        &[],
    )
    .await;
    assert!(s.http.starts_with("127.0.0.2:"), "{}", s.http);
    let media = s.ready["media"].as_str().expect("media");
    let port = media.rsplit(':').next().expect("port");
    assert!(media.starts_with("0.0.0.0:"), "{media}");
    let mut room = peers(&s, "wildcard", 2).await;
    let ok = drive_until(&mut room, CONNECT, true, everyone_hears_everyone).await;
    assert!(ok, "{}", report(&room));
    for p in &room {
        assert_eq!(
            candidate_address(&p.answer_sdp),
            Some(format!("127.0.0.2:{port}")),
            "{}",
            p.answer_sdp
        );
    }
}

/// `media.public_ip` goes in every candidate, whatever the client reached.
#[tokio::test]
async fn the_public_ip_is_the_candidate() {
    let s = Server::start(BIN, &[("SWITCHBOARD_MEDIA__PUBLIC_IP", "192.0.2.80")], &[]).await;
    let media = s.ready["media"].as_str().expect("media");
    let port = media.rsplit(':').next().expect("port");
    let mut room = peers(&s, "public", 1).await;
    let ok = drive_until(&mut room, CONNECT, false, |p| p[0].answers == 1).await;
    assert!(ok, "{}", report(&room));
    assert_eq!(
        candidate_address(&room[0].answer_sdp),
        Some(format!("192.0.2.80:{port}")),
        "{}",
        room[0].answer_sdp
    );
}

/// A peer whose handshake never finishes (it offers, takes the answer, and
/// never sends a datagram) gets an `error` once `media.connect_timeout_secs`
/// passes; the call beside it goes on.
#[tokio::test]
async fn a_handshake_that_never_finishes_ends_with_an_error_and_nobody_else_stutters() {
    // Long enough for a good peer to connect on a loaded machine: each is
    // driven alone right after its join, its deadline running.
    let s = Server::start(
        BIN,
        &[("SWITCHBOARD_MEDIA__CONNECT_TIMEOUT_SECS", "5")],
        &[],
    )
    .await;
    let mut room = Vec::new();
    for _ in 0..2 {
        let mut p = MediaPeer::join(&s, "stuck").await;
        p.offer_tracks().await;
        let mut one = vec![p];
        let ok = drive_until(&mut one, CONNECT, false, |p| p[0].connected).await;
        assert!(ok, "{}", report(&one));
        room.append(&mut one);
    }
    let ok = drive_until(&mut room, CONNECT, true, everyone_hears_everyone).await;
    assert!(ok, "{}", report(&room));
    let mut silent = MediaPeer::join(&s, "stuck").await;
    silent.offer_tracks().await;
    let answer = silent.ws.recv_type("media").await;
    assert_eq!(answer["data"]["kind"], "answer", "{answer}");
    let started = Instant::now();
    let before = frames_so_far(&room);
    // The others go on while the silent one waits for its verdict.
    let mut verdict = None;
    while verdict.is_none() && started.elapsed() < WAIT {
        drive_until(&mut room, Duration::from_millis(100), true, |_| false).await;
        verdict = silent
            .ws
            .try_recv(Duration::from_millis(1))
            .await
            .filter(|f| f["type"] == "error");
    }
    let err = verdict.expect("an error frame for the stuck peer");
    assert_eq!(err["code"], "unavailable", "{err}");
    assert!(
        err["message"].as_str().unwrap_or("").contains("media"),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_secs(3), "too early");
    for p in &room {
        assert!(p.connected && p.errors.is_empty(), "{}", report(&room));
    }
    assert!(each_got_more(&room, &before, 20), "{}", report(&room));
}
