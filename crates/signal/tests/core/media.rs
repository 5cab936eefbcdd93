//! SFU rooms (PROTOCOL.md §7): the room's kind, what the media relay hears
//! (`Output::Media`), the `media` request and the relay's frames.

use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Value, json};
use switchboard_signal::{
    AdminId, AdminReply, AdminRequest, Config, ConnId, Disconnect, ErrorCode, MediaKind,
    MediaOutput, Output,
};

use crate::harness::{Client, H, seq, user};

fn sfu_default() -> Config {
    Config {
        default_media: MediaKind::Sfu,
        ..Config::default()
    }
}

fn joined(room: &str, peer: &str, conn: ConnId) -> MediaOutput {
    MediaOutput::Joined {
        room: room.into(),
        peer: peer.into(),
        conn: Some(conn),
    }
}

fn left(room: &str, peer: &str) -> MediaOutput {
    MediaOutput::Left {
        room: room.into(),
        peer: peer.into(),
    }
}

fn raw(v: &Value) -> Box<RawValue> {
    RawValue::from_string(v.to_string()).unwrap()
}

/// Joins asking for `media` (when given) and returns the `joined` frame.
fn join_as(h: &mut H, c: &Client, room: &str, media: Option<&str>) -> Value {
    let mut req = json!({"type":"join","room":room});
    if let Some(m) = media {
        req["media"] = json!(m);
    }
    h.send(c.conn, req);
    let v = h.next(c.conn);
    assert_eq!(v["type"], "joined", "{v}");
    v
}

fn take_media(h: &mut H) -> Vec<MediaOutput> {
    std::mem::take(&mut h.media)
}

#[test]
fn the_join_that_makes_a_room_decides_its_kind() {
    let mut h = H::default();
    let (a, b, c, d) = (h.connect(), h.connect(), h.connect(), h.connect());
    assert_eq!(join_as(&mut h, &a, "s", Some("sfu"))["media"], "sfu");
    // A later join gets the room's kind, whatever it asked.
    assert_eq!(join_as(&mut h, &b, "s", Some("mesh"))["media"], "sfu");
    assert_eq!(join_as(&mut h, &c, "m", None)["media"], "mesh");
    assert_eq!(join_as(&mut h, &d, "m", Some("sfu"))["media"], "mesh");
    assert_eq!(
        take_media(&mut h),
        [joined("s", &a.peer, a.conn), joined("s", &b.peer, b.conn)]
    );
    assert_eq!((h.core.stats().rooms, h.core.stats().sfu_rooms), (2, 1));
    h.core.admin(h.now, AdminId(1), AdminRequest::Rooms);
    let Some(Ok(AdminReply::Rooms(rooms))) = h.core.poll_admin().map(|a| a.result) else {
        panic!("no room list");
    };
    let kinds: Vec<(&str, MediaKind)> = rooms.iter().map(|r| (&*r.room, r.media)).collect();
    assert_eq!(kinds, [("m", MediaKind::Mesh), ("s", MediaKind::Sfu)]);
    h.core
        .admin(h.now, AdminId(2), AdminRequest::Room { room: "s".into() });
    let Some(Ok(AdminReply::Room(detail))) = h.core.poll_admin().map(|a| a.result) else {
        panic!("no room");
    };
    assert_eq!(detail.to_json(|_| json!(0))["media"], "sfu");

    // The kind goes with the room: made again, the new first join decides.
    for x in [&a, &b] {
        h.send(x.conn, json!({"type":"leave","room":"s"}));
    }
    assert_eq!(h.core.stats().sfu_rooms, 0);
    h.take(a.conn);
    h.take(b.conn);
    assert_eq!(join_as(&mut h, &a, "s", None)["media"], "mesh");
    assert_eq!(take_media(&mut h), [left("s", &a.peer), left("s", &b.peer)]);
}

#[test]
fn rooms_media_is_the_default_kind() {
    let mut h = H::new(sfu_default());
    let (a, b) = (h.connect(), h.connect());
    assert_eq!(join_as(&mut h, &a, "x", None)["media"], "sfu");
    assert_eq!(join_as(&mut h, &b, "y", Some("mesh"))["media"], "mesh");
    assert_eq!(take_media(&mut h), [joined("x", &a.peer, a.conn)]);
    // A bad kind is refused and changes nothing.
    h.send(
        b.conn,
        json!({"type":"join","room":"z","media":"p2p","id":"j"}),
    );
    h.expect_error(b.conn, "bad_request", Some(json!("j")));
    assert_eq!(h.core.stats().rooms, 2);
}

/// `Joined` comes right after the joiner's `joined` frame, and carries the
/// connection it joined on.
#[test]
fn media_joined_follows_the_joined_frame() {
    let mut h = H::default();
    let a = h.connect();
    h.core
        .handle_text(h.now, a.conn, r#"{"type":"join","room":"r","media":"sfu"}"#);
    let mut outs = Vec::new();
    while let Some(out) = h.core.poll_output() {
        outs.push(out);
    }
    assert_eq!(outs.len(), 2, "{outs:?}");
    assert!(
        matches!(&outs[0], Output::Frame { conn, frame } if *conn == a.conn && frame.body.starts_with(br#"{"type":"joined""#)),
        "{outs:?}"
    );
    assert_eq!(outs[1], Output::Media(joined("r", &a.peer, a.conn)));
}

#[test]
fn every_way_out_tells_the_relay_once() {
    let mut h = H::new(Config {
        max_suspended_per_user: 1,
        ..sfu_default()
    });
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    for x in [&a, &b, &c] {
        join_as(&mut h, x, "r", None);
    }
    assert_eq!(take_media(&mut h).len(), 3);

    // leave
    h.send(a.conn, json!({"type":"leave","room":"r"}));
    assert_eq!(take_media(&mut h), [left("r", &a.peer)]);
    // kick
    h.core.admin(
        h.now,
        AdminId(1),
        AdminRequest::Kick {
            room: "r".into(),
            peer: b.peer.clone(),
        },
    );
    h.pump();
    assert_eq!(take_media(&mut h), [left("r", &b.peer)]);
    // a clean close
    h.drop_conn(c.conn, Disconnect::Clean);
    assert_eq!(take_media(&mut h), [left("r", &c.peer)]);
    assert_eq!(h.core.stats().sfu_rooms, 0);

    // close-room
    let (d, e) = (h.connect(), h.connect());
    join_as(&mut h, &d, "q", None);
    join_as(&mut h, &e, "q", None);
    take_media(&mut h);
    h.core.admin(
        h.now,
        AdminId(2),
        AdminRequest::CloseRoom { room: "q".into() },
    );
    h.pump();
    assert_eq!(take_media(&mut h), [left("q", &d.peer), left("q", &e.peer)]);

    // An abrupt drop: the session stays in the room through its grace
    // period (its media may go on), and leaves when the grace expires.
    let f = h.connect();
    join_as(&mut h, &f, "g", None);
    take_media(&mut h);
    h.drop_conn(f.conn, Disconnect::Abrupt);
    h.advance(Duration::from_secs(19));
    assert!(h.media.is_empty(), "{:?}", h.media);
    h.advance(Duration::from_secs(2));
    assert_eq!(take_media(&mut h), [left("g", &f.peer)]);

    // Too many sessions of one user in grace: the oldest ends at once.
    let (u1, u2) = (h.connect_as(user("u")), h.connect_as(user("u")));
    join_as(&mut h, &u1, "t", None);
    join_as(&mut h, &u2, "t", None);
    take_media(&mut h);
    h.drop_conn(u1.conn, Disconnect::Abrupt);
    assert!(h.media.is_empty(), "{:?}", h.media);
    h.drop_conn(u2.conn, Disconnect::Abrupt);
    assert_eq!(take_media(&mut h), [left("t", &u1.peer)]);
    h.advance(Duration::from_secs(21));
    assert_eq!(take_media(&mut h), [left("t", &u2.peer)]);
    assert_eq!(h.core.stats().sfu_rooms, 0);
}

#[test]
fn a_resume_keeps_the_media_session() {
    let mut h = H::new(sfu_default());
    let (a, b) = (h.connect(), h.connect());
    join_as(&mut h, &a, "r", None);
    join_as(&mut h, &b, "r", None);
    h.take(a.conn);
    take_media(&mut h);
    h.drop_conn(a.conn, Disconnect::Abrupt);
    let answer = json!({"kind":"answer","sdp":"v=0\r\n"});
    // Sent while `a` is away: kept for its resume.
    assert!(h.core.send_media(h.now, "r", &a.peer, &raw(&answer)));
    assert!(
        h.core
            .media_error(h.now, "r", &a.peer, ErrorCode::Internal, "media failed")
    );
    h.pump();
    h.advance(Duration::from_secs(5));
    // `joined` and `other_joined` were handled.
    let (conn, ok) = h.resume(&a, 2);
    assert!(ok);
    // Nothing for the relay: the media session runs apart from signaling.
    assert!(h.media.is_empty(), "{:?}", h.media);
    let resumed = h.next(conn);
    assert_eq!(resumed["type"], "resumed");
    let media = h.next(conn);
    assert_eq!(
        media,
        json!({"seq":3,"type":"media","room":"r","data":answer})
    );
    let error = h.next(conn);
    assert_eq!(
        error,
        json!({"seq":4,"type":"error","code":"internal","message":"media failed","room":"r"})
    );
    h.quiet(conn);
    // The resumed session is still the relay's peer in the room.
    assert!(h.core.send_media(h.now, "r", &a.peer, &raw(&answer)));
    h.pump();
    assert_eq!(seq(&h.next(conn)), 5);
    h.send(
        conn,
        json!({"type":"media","room":"r","data":{"kind":"offer","sdp":"v=0"}}),
    );
    assert_eq!(take_media(&mut h).len(), 1);
    h.quiet(conn);
}

#[test]
fn send_media_goes_only_to_media_peers_of_the_room() {
    let mut h = H::default();
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    join_as(&mut h, &a, "s1", Some("sfu"));
    join_as(&mut h, &a, "s2", Some("sfu"));
    join_as(&mut h, &b, "s2", None);
    join_as(&mut h, &c, "m", None);
    for x in [&a, &b, &c] {
        h.take(x.conn);
    }
    let data = raw(&json!({"kind":"offer","sdp":"v=0"}));
    assert!(h.core.send_media(h.now, "s1", &a.peer, &data));
    // Not in the room, a mesh room, no such room, no such peer.
    assert!(!h.core.send_media(h.now, "s1", &b.peer, &data));
    assert!(!h.core.send_media(h.now, "m", &c.peer, &data));
    assert!(!h.core.send_media(h.now, "nope", &a.peer, &data));
    assert!(!h.core.send_media(h.now, "s2", "nobody", &data));
    assert!(
        !h.core
            .media_error(h.now, "m", &c.peer, ErrorCode::BadRequest, "x")
    );
    h.pump();
    let got = h.next(a.conn);
    assert_eq!(
        got,
        json!({"seq":got["seq"],"type":"media","room":"s1","data":{"kind":"offer","sdp":"v=0"}})
    );
    for x in [&a, &b, &c] {
        h.quiet(x.conn);
    }
    // A peer in two SFU rooms is two media peers: leaving one leaves the
    // other alone.
    h.send(a.conn, json!({"type":"leave","room":"s1"}));
    h.take(a.conn);
    assert_eq!(
        take_media(&mut h),
        [
            joined("s1", &a.peer, a.conn),
            joined("s2", &a.peer, a.conn),
            joined("s2", &b.peer, b.conn),
            left("s1", &a.peer),
        ]
    );
    assert!(!h.core.send_media(h.now, "s1", &a.peer, &data));
    assert!(h.core.send_media(h.now, "s2", &a.peer, &data));
    h.pump();
    assert_eq!(h.next(a.conn)["room"], "s2");
    assert_eq!(h.core.counters().media_frames, 2);
}

#[test]
fn media_requests_are_checked() {
    let mut h = H::default();
    let (a, b) = (h.connect(), h.connect());
    join_as(&mut h, &a, "s", Some("sfu"));
    join_as(&mut h, &a, "m", None);
    join_as(&mut h, &b, "s", None);
    h.take(a.conn);
    h.take(b.conn);
    take_media(&mut h);
    let offer = json!({"kind":"offer","sdp":"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"});
    let refusals = [
        (json!({"room":"elsewhere","data":offer}), "not_in_room"),
        (json!({"room":"m","data":offer}), "bad_request"),
        (json!({"room":"s","data":[offer]}), "bad_request"),
        (json!({"room":"s","data":"offer"}), "bad_request"),
        (json!({"room":"s","data":{"sdp":"v=0"}}), "bad_request"),
        (
            json!({"room":"s","data":{"kind":1,"sdp":"v=0"}}),
            "bad_request",
        ),
        (json!({"room":"s","data":{"kind":"hello"}}), "bad_request"),
        (json!({"room":"s","data":{"kind":"offer"}}), "bad_request"),
        (
            json!({"room":"s","data":{"kind":"answer","sdp":{"x":1}}}),
            "bad_request",
        ),
        (
            json!({"room":"s","data":{"kind":"candidate","candidate":"candidate:1"}}),
            "bad_request",
        ),
        (
            json!({"room":"s","data":{"kind":"candidate"}}),
            "bad_request",
        ),
        (json!({"room":"s"}), "bad_request"),
    ];
    for (i, (mut req, code)) in refusals.into_iter().enumerate() {
        req["type"] = json!("media");
        req["id"] = json!(i);
        h.send(a.conn, req);
        h.expect_error(a.conn, code, Some(json!(i)));
    }
    // A duplicate key is refused too (the relay must not read another
    // field than the one checked).
    h.text(
        a.conn,
        r#"{"type":"media","room":"s","id":"d","data":{"kind":"offer","sdp":"v=0","kind":"candidate"}}"#,
    );
    h.expect_error(a.conn, "bad_request", Some(json!("d")));
    assert!(h.media.is_empty(), "{:?}", h.media);
    assert_eq!(h.core.counters().errors(ErrorCode::BadRequest), 12);

    // Valid ones go to the relay as written, and nothing comes back: an
    // `id` gets no ack.
    let text =
        r#"{"type":"media","room":"s","id":7,"data":{"kind":"offer","sdp":"v=0\r\n","x":[1.50]}}"#;
    h.text(a.conn, text);
    let candidate = json!({"kind":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 10.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}});
    h.send(b.conn, json!({"type":"media","room":"s","data":candidate}));
    h.send(
        b.conn,
        json!({"type":"media","room":"s","data":{"kind":"answer","sdp":""}}),
    );
    h.quiet(a.conn);
    h.quiet(b.conn);
    let signal = |peer: &str, data: &str| MediaOutput::Signal {
        room: "s".into(),
        peer: peer.into(),
        data: RawValue::from_string(data.into()).unwrap(),
    };
    assert_eq!(
        take_media(&mut h),
        [
            signal(&a.peer, r#"{"kind":"offer","sdp":"v=0\r\n","x":[1.50]}"#),
            signal(&b.peer, &candidate.to_string()),
            signal(&b.peer, r#"{"kind":"answer","sdp":""}"#),
        ]
    );
    assert_eq!(h.core.counters().media_signals, 3);
}

#[test]
fn media_requests_spend_the_rate_limit() {
    let mut h = H::new(Config {
        rate_per_sec: 1,
        rate_burst: 3,
        ..sfu_default()
    });
    let a = h.connect();
    join_as(&mut h, &a, "s", None);
    take_media(&mut h);
    let req = json!({"type":"media","room":"s","data":{"kind":"offer","sdp":"v=0"},"id":"o"});
    h.send(a.conn, req.clone());
    h.send(a.conn, req.clone());
    h.send(a.conn, req);
    h.expect_error(a.conn, "rate_limited", Some(json!("o")));
    assert_eq!(take_media(&mut h).len(), 2);
}

/// A Socket.IO peer cannot send `media`: it joins SFU rooms as a member
/// the others see, but the relay never hears of it.
#[test]
fn classic_peers_have_no_media_session() {
    let mut h = H::new(sfu_default());
    let a = h.connect();
    let k = h.classic();
    // A classic join makes a room of the default kind.
    assert_eq!(
        h.emit(k, "join", vec![json!("r")], true),
        Some(json!({"ok": true}))
    );
    assert_eq!(h.event(k).0, "joined");
    assert_eq!(h.core.stats().sfu_rooms, 1);
    assert!(h.media.is_empty(), "{:?}", h.media);
    let j = join_as(&mut h, &a, "r", Some("mesh"));
    assert_eq!(j["media"], "sfu");
    assert_eq!(j["peers"].as_array().map(Vec::len), Some(1), "{j}");
    assert_eq!(h.event(k).0, "otherjoin");
    assert_eq!(take_media(&mut h), [joined("r", &a.peer, a.conn)]);
    // `media` is no classic event.
    let ack = h.emit(
        k,
        "media",
        vec![json!("r"), json!({"kind":"offer","sdp":"v=0"})],
        true,
    );
    assert_eq!(
        ack.as_ref().map(|v| &v["code"]),
        Some(&json!("bad_request"))
    );
    let data = raw(&json!({"kind":"offer","sdp":"v=0"}));
    h.core
        .admin(h.now, AdminId(1), AdminRequest::Room { room: "r".into() });
    let Some(Ok(AdminReply::Room(detail))) = h.core.poll_admin().map(|a| a.result) else {
        panic!("no room");
    };
    let kp = detail.peers[0].peer.clone();
    assert!(!h.core.send_media(h.now, "r", &kp, &data));
    // Its leave is nothing to the relay; a native one's is.
    h.emit(k, "leave", vec![json!("r")], false);
    h.send(a.conn, json!({"type":"leave","room":"r"}));
    assert_eq!(take_media(&mut h), [left("r", &a.peer)]);
}

/// A call's room is a mesh room whatever `rooms.media` says: the two
/// peers reach each other.
#[test]
fn call_rooms_stay_mesh() {
    let mut h = H::new(sfu_default());
    let alice = h.connect_as(user("alice"));
    let bob = h.connect_as(user("bob"));
    h.send(alice.conn, json!({"type":"call","to":"bob","id":1}));
    let ringing = h.next(alice.conn);
    let call = ringing["call"].as_str().unwrap().to_owned();
    let incoming = h.next(bob.conn);
    assert_eq!(incoming["type"], "incoming_call");
    h.send(bob.conn, json!({"type":"accept","call":call}));
    let accepted = h.next(alice.conn);
    assert_eq!(accepted["type"], "accepted");
    assert_eq!(h.next(alice.conn)["media"], "mesh");
    assert_eq!(h.next(bob.conn)["media"], "mesh");
    assert!(h.media.is_empty(), "{:?}", h.media);
    assert_eq!(h.core.stats().sfu_rooms, 0);
}

/// A session in grace whose replay cannot take the relay's frame ends at
/// once, like for any frame: the relay hears it left.
#[test]
fn a_full_replay_ends_the_media_peer() {
    let mut h = H::new(Config {
        replay_frames: 4,
        ..sfu_default()
    });
    let (a, b) = (h.connect(), h.connect());
    join_as(&mut h, &a, "r", None);
    join_as(&mut h, &b, "r", None);
    take_media(&mut h);
    h.drop_conn(a.conn, Disconnect::Abrupt);
    let data = raw(&json!({"kind":"offer","sdp":"v=0"}));
    // `joined` and `other_joined` are kept: two more fit.
    assert!(h.core.send_media(h.now, "r", &a.peer, &data));
    assert!(h.core.send_media(h.now, "r", &a.peer, &data));
    assert!(!h.core.send_media(h.now, "r", &a.peer, &data));
    h.pump();
    assert_eq!(take_media(&mut h), [left("r", &a.peer)]);
    assert_eq!(h.next(b.conn)["type"], "bye");
    assert!(!h.core.send_media(h.now, "r", &a.peer, &data));
}
