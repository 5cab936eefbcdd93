//! The admin API's core part on a node alone (PROTOCOL.md §8): room views,
//! kick and close-room, seen by native and Socket.IO peers.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use switchboard_signal::admin::{LOCAL_NODE, wall_clock};
use switchboard_signal::{
    AdminError, AdminId, AdminReply, AdminRequest, ConnId, Disconnect, ErrorCode, Event,
    LeaveReason, Media,
};

use crate::harness::{H, user};

/// One admin request: a node alone answers it at once, under its id.
fn admin(h: &mut H, request: AdminRequest) -> Result<AdminReply, AdminError> {
    h.core.admin(h.now, AdminId(7), request);
    h.pump();
    let answer = h.core.poll_admin().expect("a node alone answers at once");
    assert_eq!(answer.id, AdminId(7));
    assert!(h.core.poll_admin().is_none(), "one answer per request");
    answer.result
}

fn kick(room: &str, peer: &str) -> AdminRequest {
    AdminRequest::Kick {
        room: room.into(),
        peer: peer.into(),
    }
}

fn classic_join(h: &mut H, conn: ConnId, room: &str) -> String {
    assert_eq!(
        h.emit(conn, "join", vec![json!(room)], true),
        Some(json!({"ok":true}))
    );
    let (event, args) = h.event(conn);
    assert_eq!(event, "joined");
    args[1].as_str().unwrap().to_owned()
}

fn drain_events(h: &mut H) -> Vec<Event> {
    std::iter::from_fn(|| h.core.poll_event()).collect()
}

#[test]
fn room_views_list_rooms_and_their_peers_with_times() {
    let mut h = H::default();
    let t0 = h.now;
    let a = h.connect_as(user("alice"));
    let b = h.connect();
    h.send(
        a.conn,
        json!({"type":"join","room":"r","meta":{"name":"A"}}),
    );
    h.take(a.conn);
    h.advance(Duration::from_secs(3));
    let t3 = h.now;
    h.join(&b, "r");
    h.advance(Duration::from_secs(2));
    let t5 = h.now;
    h.take(a.conn);
    h.join(&a, "lobby");

    let Ok(AdminReply::Rooms(rooms)) = admin(&mut h, AdminRequest::Rooms) else {
        panic!("rooms");
    };
    let listed: Vec<_> = rooms
        .iter()
        .map(|r| (r.room.as_str(), r.media, r.peers, r.created))
        .collect();
    assert_eq!(
        listed,
        [("lobby", Media::Mesh, 1, t5), ("r", Media::Mesh, 2, t0)]
    );

    let Ok(AdminReply::Room(room)) = admin(&mut h, AdminRequest::Room { room: "r".into() }) else {
        panic!("room");
    };
    assert_eq!(room.room, "r");
    assert_eq!(room.created, t0);
    let peers: Vec<_> = room
        .peers
        .iter()
        .map(|p| {
            (
                p.peer.as_str(),
                p.user.as_deref(),
                p.meta.as_str(),
                &*p.node.0,
                p.joined,
            )
        })
        .collect();
    assert_eq!(
        peers,
        [
            (
                a.peer.as_str(),
                Some("alice"),
                r#"{"name":"A"}"#,
                LOCAL_NODE,
                t0
            ),
            (b.peer.as_str(), None, "{}", LOCAL_NODE, t3),
        ]
    );

    // The JSON of §8, times written by the shell's conversion.
    let wall_now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let now = h.now;
    let unix = |at| {
        let wall = wall_clock(at, now, wall_now);
        json!(
            wall.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        )
    };
    assert_eq!(
        room.to_json(unix),
        json!({"room":"r","media":"mesh","created":999_995,"peers":[
            {"peer":a.peer,"user":"alice","meta":{"name":"A"},"node":"local","joined":999_995},
            {"peer":b.peer,"user":null,"meta":{},"node":"local","joined":999_998},
        ]})
    );
    assert_eq!(
        rooms[0].to_json(unix),
        json!({"room":"lobby","media":"mesh","peers":1,"created":1_000_000})
    );

    // Unknown: 404. Asking changes nothing and sends nothing.
    assert_eq!(
        admin(
            &mut h,
            AdminRequest::Room {
                room: "nope".into()
            }
        ),
        Err(AdminError::NoSuchRoom)
    );
    h.quiet(a.conn);
    h.quiet(b.conn);
}

#[test]
fn a_kicked_native_peer_gets_kicked_and_left_the_others_bye() {
    let mut h = H::default();
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    for x in [&a, &b, &c] {
        h.join(x, "r");
    }
    h.take(a.conn);
    h.take(b.conn);
    drain_events(&mut h);

    assert_eq!(
        admin(&mut h, kick("r", &b.peer)),
        Ok(AdminReply::Kicked { peers: 1 })
    );
    let e = h.expect(
        b.conn,
        json!({"type":"error","code":"kicked","room":"r",
               "message":"an operator removed you from this room"}),
    );
    assert!(e["seq"].is_u64(), "a sequenced frame: {e}");
    h.expect(b.conn, json!({"type":"left","room":"r"}));
    for x in [&a, &c] {
        h.expect(x.conn, json!({"type":"bye","room":"r","peer":b.peer}));
    }
    assert!(drain_events(&mut h).contains(&Event::Left {
        peer: b.peer.clone(),
        room: "r".into(),
        peers: 2,
        reason: LeaveReason::Kicked,
    }));
    assert_eq!(h.core.counters().errors(ErrorCode::Kicked), 1);

    // Its session stays: it may message its other rooms and join again.
    h.send(b.conn, json!({"type":"message","room":"r","data":1,"id":1}));
    h.expect_error(b.conn, "not_in_room", Some(json!(1)));
    let joined = h.join(&b, "r");
    assert_eq!(joined["peers"].as_array().map(Vec::len), Some(2));
    assert_eq!(h.core.stats().sessions, 3);
    h.take(a.conn);
    h.take(c.conn);

    // Not there (any more), or no such room: 404, and nothing happens.
    assert_eq!(
        admin(&mut h, kick("r", "nobody")),
        Err(AdminError::NoSuchPeer)
    );
    h.join(&a, "other");
    assert_eq!(
        admin(&mut h, kick("other", &b.peer)),
        Err(AdminError::NoSuchPeer)
    );
    assert_eq!(
        admin(&mut h, kick("gone", &b.peer)),
        Err(AdminError::NoSuchRoom)
    );
    for x in [&a, &b, &c] {
        h.quiet(x.conn);
    }
}

#[test]
fn a_kicked_classic_peer_gets_an_error_event_and_leaved() {
    let mut h = H::default();
    let n = h.connect();
    h.join(&n, "r");
    let c = h.classic();
    let cid = classic_join(&mut h, c, "r");
    h.take(n.conn);

    assert_eq!(
        admin(&mut h, kick("r", &cid)),
        Ok(AdminReply::Kicked { peers: 1 })
    );
    assert_eq!(
        h.event(c),
        (
            "error".into(),
            vec![json!({"code":"kicked","room":"r",
                        "message":"an operator removed you from this room"})]
        )
    );
    assert_eq!(h.event(c), ("leaved".into(), vec![json!("r"), json!(cid)]));
    h.quiet_events(c);
    h.expect(n.conn, json!({"type":"bye","room":"r","peer":cid}));

    // Still connected: it joins again.
    classic_join(&mut h, c, "r");
}

#[test]
fn closing_a_room_kicks_every_peer_and_ends_it() {
    let mut h = H::default();
    let (a, b) = (h.connect(), h.connect());
    h.join(&a, "r");
    h.join(&b, "r");
    let c = h.classic();
    let cid = classic_join(&mut h, c, "r");
    h.take(a.conn);
    h.join(&a, "elsewhere");
    for x in [&a, &b] {
        h.take(x.conn);
    }

    assert_eq!(
        admin(&mut h, AdminRequest::CloseRoom { room: "r".into() }),
        Ok(AdminReply::Kicked { peers: 3 })
    );
    let types = |frames: Vec<Value>| -> Vec<(String, Value)> {
        frames
            .into_iter()
            .map(|f| (f["type"].as_str().unwrap().to_owned(), f["peer"].clone()))
            .collect()
    };
    // In join order: each is kicked, and hears of those kicked before it.
    assert_eq!(
        types(h.take(a.conn)),
        [("error".into(), Value::Null), ("left".into(), Value::Null)]
    );
    assert_eq!(
        types(h.take(b.conn)),
        [
            ("bye".into(), json!(a.peer)),
            ("error".into(), Value::Null),
            ("left".into(), Value::Null)
        ]
    );
    let events: Vec<String> = (0..4).map(|_| h.event(c).0).collect();
    assert_eq!(events, ["bye", "bye", "error", "leaved"]);
    assert_eq!(
        admin(&mut h, AdminRequest::Room { room: "r".into() }),
        Err(AdminError::NoSuchRoom)
    );
    assert_eq!(
        admin(&mut h, AdminRequest::CloseRoom { room: "r".into() }),
        Err(AdminError::NoSuchRoom)
    );
    let Ok(AdminReply::Rooms(rooms)) = admin(&mut h, AdminRequest::Rooms) else {
        panic!("rooms");
    };
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].room, "elsewhere");
    // The room is gone for everyone: a fresh join sees nobody.
    assert_eq!(h.join(&b, "r")["peers"], json!([]));
    h.quiet_events(c);
    let _ = cid;
}

#[test]
fn a_peer_in_its_grace_period_finds_its_kick_on_resume() {
    let mut h = H::default();
    let (a, b) = (h.connect(), h.connect());
    h.join(&a, "r");
    let last = h.join(&b, "r")["seq"].as_u64().unwrap();
    h.take(a.conn);
    h.drop_conn(b.conn, Disconnect::Abrupt);

    assert_eq!(
        admin(&mut h, kick("r", &b.peer)),
        Ok(AdminReply::Kicked { peers: 1 })
    );
    h.expect(a.conn, json!({"type":"bye","room":"r","peer":b.peer}));
    let (conn, ok) = h.resume(&b, last);
    assert!(ok);
    h.expect(
        conn,
        json!({"type":"resumed","session":b.session,"peer":b.peer}),
    );
    let kicked = h.next(conn);
    assert_eq!(kicked["code"], "kicked", "{kicked}");
    h.expect(conn, json!({"type":"left","room":"r"}));
}
